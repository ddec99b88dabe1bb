"""MQTT transport: a subscriber that hands each message to the hub and acknowledges on request.

Contract with the hub (``hub.channels.mqtt``): ``on_message(delivery)`` is called on the
client's network thread for every PUBLISH, in arrival order; it must return quickly (queue the
work). Nothing is acknowledged by this module on its own: the hub calls ``ack(delivery)`` once
the message is durable, and only then is the PUBACK sent.

Why paho-mqtt 2.x and not aiomqtt: the PUBACK must wait for the durable write, which needs
application-controlled acknowledgements. paho has them (``manual_ack=True`` + ``Client.ack``,
paho PR #753); aiomqtt does not (its issue #345 / draft PR #346 are open, and the workaround is
reaching into its private ``_client``). QoS 2 is not offered: paho answers PUBREC before the
application sees the message, and after PUBREC the broker never sends that PUBLISH again, so a
crash before the durable write would lose it. QoS 1 plus the hub's deduplication gives exactly
once in the inbox.

Sessions are persistent (MQTT 5: clean start off with a session expiry; 3.1.1: clean session
off), so QoS 1 messages published while the hub is away are queued by the broker and delivered
on reconnect, and messages received but not acknowledged before a crash are sent again.

Acknowledgements are tied to the connection they came on (``Delivery.generation``): after a
reconnect an unacknowledged packet id may no longer name the same message, so an ack for an
older connection is skipped (the broker resends that message on the new connection, where the
hub's deduplication answers it and acknowledges that copy). paho clears its outgoing queue when
it reconnects, and ``on_disconnect`` runs before that; both take ``_lock``, so a PUBACK is never
sent on a connection other than its message's.

Reconnection is paho's: doubling delays from ``reconnect_min_secs`` to ``reconnect_max_secs``,
forever, also for the first connection (a broker that is down at start-up is waited for).
Logs name the broker, subscription filters and reason codes; never topics (they may carry
device ids), payloads or credentials. Imports only paho and the standard library.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger(__name__)

NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 session expiry interval meaning "never" (spec 3.1.2.11.2)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS to the broker. ``ca_file`` None: the system's trusted CAs."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if not self.check_hostname:
            ctx.check_hostname = False
        return ctx


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """Where and how to connect. ``client_id`` names the persistent session: keep it stable."""

    host: str
    port: int
    client_id: str
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_secs: int = 60
    session_expiry_secs: int | None = None  # MQTT 5; None: never expires
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    reconnect_min_secs: int = 1
    reconnect_max_secs: int = 60
    receive_maximum: int = 64  # MQTT 5: unacknowledged QoS 1 messages the broker may send


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received PUBLISH. ``user_properties`` and ``content_type`` are MQTT 5 properties."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    duplicate: bool
    mid: int
    generation: int
    user_properties: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None


@dataclass
class SubscriberStats:
    """Counters for tests and metrics (monotonic since start)."""

    connects: int = 0
    disconnects: int = 0
    deliveries: int = 0
    acks: int = 0
    stale_acks: int = 0  # skipped: the message came on an earlier connection
    sessions_resumed: int = 0


MessageHandler = Callable[[Delivery], None]


class MqttSubscriber:
    """A persistent-session subscriber with application acknowledgements (see module doc).

    ``subscriptions`` are (topic filter, QoS) pairs, subscribed again on every connection (a
    broker whose session expired has forgotten them; MQTT 5 asks for retained messages only on a
    new subscription).
    """

    Options = BrokerOptions  # the hub builds these through the class it found by entry point
    Tls = TlsOptions

    def __init__(self, options: BrokerOptions, subscriptions: list[tuple[str, int]],
                 on_message: MessageHandler) -> None:
        if any(qos not in (0, 1) for _, qos in subscriptions):
            raise ValueError("only QoS 0 and 1 can be acknowledged after a durable write")
        self.options = options
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.stats = SubscriberStats()
        self.subscribed = threading.Event()  # set once the broker granted every subscription
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._v5 = options.protocol == "5"
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        opts = self.options
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=opts.client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            clean_session=None if self._v5 else False,
            manual_ack=True, reconnect_on_failure=True)
        if opts.username is not None:
            client.username_pw_set(opts.username, opts.password)
        if opts.tls is not None:
            client.tls_set_context(opts.tls.context())
        client.reconnect_delay_set(opts.reconnect_min_secs, opts.reconnect_max_secs)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and stay connected."""
        opts = self.options
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = (NEVER_EXPIRES if opts.session_expiry_secs is None
                                           else opts.session_expiry_secs)
            props.ReceiveMaximum = opts.receive_maximum
            self._client.connect_async(opts.host, opts.port, opts.keepalive_secs,
                                       clean_start=False, properties=props)
        else:
            self._client.connect_async(opts.host, opts.port, opts.keepalive_secs)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect (the session stays on the broker) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._connected = False
            self._generation += 1

    def ack(self, delivery: Delivery) -> bool:
        """Send the PUBACK for ``delivery`` if it is still the connection it came on."""
        if delivery.qos == 0:
            return True
        with self._lock:
            if delivery.generation != self._generation or not self._connected:
                self.stats.stale_acks += 1
                return False
            rc = self._client.ack(delivery.mid, delivery.qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.stale_acks += 1
            return False
        self.stats.acks += 1
        return True

    # --- paho callbacks (network thread) ---

    def _on_connect(self, client: paho.Client, _userdata: Any, flags: paho.ConnectFlags,
                    reason: ReasonCode, _props: Properties | None) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s:%d refused the connection (%s); retrying",
                      self.options.host, self.options.port, reason.getName())
            return
        with self._lock:
            self._generation += 1
            self._connected = True
        self.stats.connects += 1
        if flags.session_present:
            self.stats.sessions_resumed += 1
        log.info("MQTT connected to %s:%d (session %s)", self.options.host, self.options.port,
                 "resumed" if flags.session_present else "new")
        if self._v5:
            # Retained messages only for a new subscription, not again on every reconnect.
            wanted: list[tuple[str, Any]] = [
                (f, SubscribeOptions(qos=q, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))
                for f, q in self.subscriptions]
        else:
            wanted = list(self.subscriptions)
        client.subscribe(wanted)

    def _on_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        log.warning("MQTT broker %s:%d unreachable; retrying with backoff",
                    self.options.host, self.options.port)

    def _on_disconnect(self, _client: paho.Client, _userdata: Any,
                       _flags: paho.DisconnectFlags, reason: ReasonCode,
                       _props: Properties | None) -> None:
        with self._lock:
            self._generation += 1
            self._connected = False
        self.subscribed.clear()
        self.stats.disconnects += 1
        (log.warning if reason.is_failure else log.info)(
            "MQTT disconnected from %s:%d (%s)", self.options.host, self.options.port,
            reason.getName())

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, _mid: int,
                      reasons: list[ReasonCode], _props: Properties | None) -> None:
        refused = [f for (f, _), r in zip(self.subscriptions, reasons, strict=False)
                   if r.is_failure]
        for name in refused:
            log.error("MQTT broker refused the subscription %s", name)
        for (name, _), granted in zip(self.subscriptions, reasons, strict=False):
            if not granted.is_failure:
                log.info("MQTT subscribed to %s (QoS %d)", name, granted.value)
        if not refused:
            self.subscribed.set()

    def _on_message(self, _client: paho.Client, _userdata: Any,
                    msg: paho.MQTTMessage) -> None:
        user: tuple[tuple[str, str], ...] = ()
        content_type = None
        props = getattr(msg, "properties", None)
        if props is not None:
            user = tuple(getattr(props, "UserProperty", ()) or ())
            content_type = getattr(props, "ContentType", None)
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers check UTF-8; keep the message, the hub refuses it
            topic = bytes(msg._topic).decode("utf-8", "replace")
        with self._lock:
            generation = self._generation
        self.stats.deliveries += 1
        try:
            self.on_message(Delivery(
                topic=topic, payload=bytes(msg.payload), qos=msg.qos, retain=bool(msg.retain),
                duplicate=bool(msg.dup), mid=msg.mid, generation=generation,
                user_properties=user, content_type=content_type))
        except Exception as exc:  # an exception here would end paho's network thread
            # Not acknowledged: the broker sends it again on the next connection.
            log.error("MQTT message handler failed (%s); message left unacknowledged",
                      type(exc).__name__)


__all__ = ["BrokerOptions", "Delivery", "MessageHandler", "MqttSubscriber", "SubscriberStats",
           "TlsOptions"]
