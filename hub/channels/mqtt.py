"""The MQTT channel: subscribed messages go into the inbox, and only then get their PUBACK.

Each message takes the path of ``POST /ingest/{source}``: the topic picks the subscription and
so the source (connector); a cheap ``decode`` at the door; the raw payload is committed to the
inbox; then the acknowledgement. The worker processes it like any other inbound message.

Acknowledgement policy:

- **stored, then acked**: a writer thread commits everything that arrived meanwhile in one
  transaction (one fsync for the batch) and then sends the PUBACKs, in arrival order (MQTT
  requires PUBACKs in the order the PUBLISHes came). If the hub dies before the commit, nothing
  was acked and the broker sends the messages again on the next connection.
- **a failing write is retried, never acked**: with backoff up to 5 s, for as long as it fails;
  meanwhile the broker holds back new messages once ``receive_maximum`` are unacknowledged.
- **bad messages are kept and acked**: a topic no subscription routes (a filter removed from
  the file while the broker still holds it in the persistent session), a payload over
  ``HUB_MAX_BODY_BYTES``, or one the source's connector cannot decode, is stored with status
  ``failed`` and the reason (``GET /messages/{id}``) and acknowledged, so the broker does not
  send it again forever. Content the worker later refuses is recorded by the worker as usual.
- **duplicates**: the dedupe key is the subscription's ``dedupe_property`` (MQTT 5 user
  property) if the message has it, else the connector's event id, else the SHA-256 of topic and
  payload (the same bytes on two devices' topics are two messages). A redelivered message finds
  its first copy, stores nothing, and is acked.

Logs and spans carry the subscription filter and the source, never the topic (it may hold a
device id) or the payload. The MQTT client is the ``connectors.mqtt`` transport, found by entry
point (group ``hub.transports``, name ``mqtt``): the hub core never imports a connector.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from hub.channels.batching import take_batch
from hub.channels.mqtt_config import MqttFile, Subscription
from hub.contracts import mqtt_meta
from hub.errors import ConfigurationError, DataError
from hub.runtime import Hub
from hub.store import inbox
from hub.store.db import utcnow, write_tx

log = logging.getLogger("hub.channels.mqtt")
TRANSPORTS = "hub.transports"
CHANNEL = "mqtt"
UNROUTED_SOURCE = "mqtt"  # inbox source of a message no subscription routes (kept as failed)
MAX_KEY = 200  # inbound_message.dedupe_key length


def transport_class() -> Any:
    """The MQTT subscriber class registered under ``hub.transports`` / ``mqtt``."""
    for ep in entry_points(group=TRANSPORTS, name="mqtt"):
        return ep.load()
    raise ConfigurationError("no MQTT transport installed (entry point hub.transports: mqtt); "
                             "reinstall the hub: pip install -e .")


@dataclass(frozen=True, slots=True)
class Door:
    """The door's verdict on one message: where it goes, its status, reason and dedupe key."""

    source: str
    label: str  # the subscription filter (or "unrouted"): safe to log
    content_type: str
    status: str
    error: str | None
    key: str


@dataclass(slots=True)
class _Pending:
    delivery: Any  # connectors.mqtt.Delivery
    door: Door
    traceparent: str | None


@dataclass
class ChannelStats:
    """Counters for tests and metrics (monotonic since start)."""

    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    write_failures: int = 0
    acked: int = 0


def _payload_key(topic: str, payload: bytes) -> str:
    digest = hashlib.sha256(topic.encode("utf-8", "replace") + b"\x00" + payload).hexdigest()
    return f"mqtt:sha256:{digest}"


def examine(config: MqttFile, hub: Hub, delivery: Any) -> Door:
    """Route and check one message without I/O; never raises."""
    topic, payload = delivery.topic, delivery.payload
    fallback_key = _payload_key(topic, payload)
    sub = config.route(topic)
    if sub is None:
        return Door(UNROUTED_SOURCE, "unrouted", "application/octet-stream",
                    inbox.STATUS_FAILED, f"no subscription routes topic '{topic}'", fallback_key)
    connector = hub.connectors.get(sub.source)
    ctype = content_type(sub, connector.content_types, delivery.content_type)
    key = _property_key(sub, delivery.user_properties) or fallback_key
    limit = hub.settings.max_body_bytes
    if len(payload) > limit:
        return Door(sub.source, sub.filter, ctype, inbox.STATUS_FAILED,
                    f"payload of {len(payload)} bytes exceeds the {limit}-byte limit", key)
    try:
        document = connector.decode(payload, ctype)
    except DataError as exc:
        reason = f"{exc.location}: {exc.message}" if exc.location else exc.message
        return Door(sub.source, sub.filter, ctype, inbox.STATUS_FAILED, reason, key)
    except Exception as exc:  # a connector must raise DataError only; keep the message anyway
        log.error("MQTT %s: decode failed unexpectedly (%s)", sub.filter, type(exc).__name__)
        return Door(sub.source, sub.filter, ctype, inbox.STATUS_FAILED,
                    "payload could not be decoded", key)
    if key == fallback_key:
        event = connector.event_id(document)
        if event:
            key = event[:MAX_KEY]  # the vendor's event id: the same key as over HTTP
    return Door(sub.source, sub.filter, ctype, inbox.STATUS_RECEIVED, None, key)


def content_type(sub: Subscription, accepted: frozenset[str], announced: str | None) -> str:
    """The subscription's content type if set; else the message's own (MQTT 5 Content Type
    property) when the source accepts it; else the source's JSON type (or its only one)."""
    if sub.content_type is not None:
        return sub.content_type
    media = (announced or "").split(";", 1)[0].strip().lower()
    if media in accepted:
        return media
    return "application/json" if "application/json" in accepted else sorted(accepted)[0]


def _property_key(sub: Subscription, props: tuple[tuple[str, str], ...]) -> str | None:
    if sub.dedupe_property is None:
        return None
    for name, value in props:
        if name == sub.dedupe_property and value:
            return f"mqtt:{sub.dedupe_property}:{value}"[:MAX_KEY]
    return None


def write_batch(engine: Engine, batch: list[_Pending]) -> list[tuple[str, bool]]:
    """Store a batch in one transaction; (message id, duplicate) per item, in order."""
    results: list[tuple[str, bool]] = []
    now = utcnow()
    with write_tx(engine) as conn:
        found: dict[tuple[str, str], str] = {}
        for source in {p.door.source for p in batch}:
            keys = [p.door.key for p in batch if p.door.source == source]
            for key, hit in inbox.find_keys(conn, source, keys).items():
                found[(source, key)] = hit.receipt.message_id
        rows: list[dict[str, Any]] = []
        for p in batch:
            ident = (p.door.source, p.door.key)
            if ident in found:
                results.append((found[ident], True))
                continue
            message_id = inbox.new_message_id()
            found[ident] = message_id  # a twin later in this batch is a duplicate
            rows.append({"id": message_id, "source": p.door.source, "channel": CHANNEL,
                         "content_type": p.door.content_type, "body": p.delivery.payload,
                         "dedupe_key": p.door.key, "status": p.door.status,
                         "error": p.door.error, "client": None, "reply": None,
                         "traceparent": p.traceparent, "received_at": now,
                         "meta": inbox.meta_text(mqtt_meta(p.delivery.topic))})
            results.append((message_id, False))
        inbox.insert_many(conn, rows)
    return results


@dataclass
class MqttChannel:
    """Subscriber (``connectors.mqtt``) + door + group-committing writer, in threads."""

    hub: Hub
    config: MqttFile
    max_batch: int = 256
    stats: ChannelStats = field(default_factory=ChannelStats)
    _queue: queue.SimpleQueue[_Pending | None] = field(default_factory=queue.SimpleQueue)
    _writer: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _subscriber: Any = None

    def __post_init__(self) -> None:
        for sub in self.config.subscriptions:
            self.hub.connectors.get(sub.source)  # UnknownSourceError names the known ones

    @classmethod
    def from_file(cls, hub: Hub, path: Path) -> MqttChannel:
        from hub.channels.mqtt_config import load_mqtt_file

        return cls(hub, load_mqtt_file(path, hub.connectors.names()))

    def on_message(self, delivery: Any) -> None:
        """The transport's handler (its network thread): examine, queue for the writer."""
        door = examine(self.config, self.hub, delivery)
        with self.hub.telemetry.intake(door.source, CHANNEL) as carrier:
            traceparent = carrier.get("traceparent")
        self._queue.put(_Pending(delivery, door, traceparent))

    def start(self) -> None:
        """Start the writer and the subscriber (which connects, and reconnects, by itself)."""
        klass = transport_class()
        options = _broker_options(klass, self.config.broker)
        subs = [(s.filter, s.qos) for s in self.config.subscriptions]
        self._subscriber = klass(options, subs, self.on_message)
        self._writer = threading.Thread(target=self._run, name="hub-mqtt-writer", daemon=True)
        self._writer.start()
        self._subscriber.start()
        self.hub.channel_states["mqtt"] = self.state
        for sub in self.config.subscriptions:
            log.info("MQTT subscription %s → source %s", sub.filter, sub.source)

    def state(self) -> dict[str, Any]:
        """For ``/ready``: connected to the broker (and every subscription granted), connecting
        (the subscriber retries by itself; the broker's persistent session queues meanwhile),
        or stopped."""
        sub = self._subscriber
        if sub is None:
            return {"state": "stopped", "subscribed": False}
        return {"state": "connected" if sub.connected else "connecting",
                "subscribed": sub.subscribed.is_set()}

    def wait_subscribed(self, timeout: float) -> bool:
        return bool(self._subscriber is not None and self._subscriber.subscribed.wait(timeout))

    def stop(self) -> None:
        """Store and acknowledge what arrived, then disconnect (the session stays)."""
        self._stopping.set()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._writer = None
        if self._subscriber is not None:
            self._subscriber.stop()
            self._subscriber = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop_after = take_batch(self._queue, first, self.max_batch)
            try:
                self._commit(batch)
            except Exception as exc:  # never let the writer die: the channel would stall
                log.error("MQTT writer failed (%s); %d message(s) left unacknowledged for the "
                          "broker to send again", type(exc).__name__, len(batch))
            if stop_after:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        delay = 0.05
        while True:
            try:
                results = write_batch(self.hub.engine, batch)
                break
            except Exception as exc:  # the database is away or locked: keep trying, never ack
                self.stats.write_failures += 1
                if self._stopping.is_set():
                    log.error("MQTT inbox write failed while stopping (%s): %d message(s) left "
                              "unacknowledged for the broker to send again",
                              type(exc).__name__, len(batch))
                    return
                log.warning("MQTT inbox write failed (%s); %d message(s) wait, retrying in "
                            "%.2f s", type(exc).__name__, len(batch), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        telemetry = self.hub.telemetry
        for pending, (_, duplicate) in zip(batch, results, strict=True):
            door = pending.door
            if duplicate:
                self.stats.duplicates += 1
                telemetry.count_outcome(door.source, "duplicate")
            else:
                self.stats.stored += 1
                telemetry.count_outcome(door.source, "received")
                if door.status == inbox.STATUS_FAILED:
                    self.stats.refused += 1
                    log.warning("MQTT %s: message kept as failed (%s)", door.label,
                                "unrouted topic" if door.label == "unrouted" else "refused")
            if self._subscriber is not None and self._subscriber.ack(pending.delivery):
                self.stats.acked += 1


def _broker_options(klass: Any, broker: Any) -> Any:
    """The transport's options (``klass.Options``, ``klass.Tls``) from the broker section."""
    tls = None
    if broker.tls is not None:
        t = broker.tls
        tls = klass.Tls(
            ca_file=str(t.ca_file) if t.ca_file else None,
            cert_file=str(t.cert_file) if t.cert_file else None,
            key_file=str(t.key_file) if t.key_file else None, check_hostname=t.check_hostname)
    return klass.Options(
        host=broker.host, port=broker.port, client_id=broker.client_id,
        protocol=broker.protocol, keepalive_secs=broker.keepalive_secs,
        session_expiry_secs=broker.session_expiry_secs, username=broker.username,
        password=broker.password(), tls=tls, reconnect_min_secs=broker.reconnect_min_secs,
        reconnect_max_secs=broker.reconnect_max_secs, receive_maximum=broker.receive_maximum)
