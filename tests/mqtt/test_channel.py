"""The MQTT channel in process, against the real Mosquitto on 127.0.0.1:1883, on SQLite and
PostgreSQL: QoS 1 messages become Observations through the inbox, bad ones are kept with the
reason and acknowledged, repeats are stored once, and the persistent session delivers what was
published while the channel was away (MQTT 5 and 3.1.1).

Each test has its own topic prefix and client id and purges its session at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from hub.api.app import create_app
from hub.channels.mqtt import MqttChannel
from hub.channels.mqtt_config import MqttFile
from hub.contracts import Identifier
from hub.fhir.ids import registry_id
from hub.identity.admin import assign_device
from hub.runtime import Hub
from hub.store import api_keys, inbox, registry
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth, make_settings
from tests.mqtt.conftest import publish, purge_session
from tests.readings import canonical
from tests.test_channel_meta import (
    IOMT_EVENT,
    IOMT_SYSTEM,
    iomt_reading_the_topic,
    mappings_with_topic_device,
)

pytestmark = pytest.mark.mqtt


def config(prefix: str, broker: tuple[str, int], subscriptions: list[dict[str, Any]],
           protocol: str = "5") -> MqttFile:
    return MqttFile.model_validate({
        "version": 1,
        "broker": {"host": broker[0], "port": broker[1], "client_id": prefix,
                   "protocol": protocol, "reconnect_max_secs": 2},
        "subscriptions": subscriptions})


@pytest.fixture
def channels(system_broker: tuple[str, int], prefix: str) -> Iterator[list[MqttChannel]]:
    """Channels a test starts; stopped, and the session purged, afterwards."""
    started: list[MqttChannel] = []
    yield started
    for channel in started:
        channel.stop()
    purge_session(*system_broker, prefix)


def start(hub: Hub, cfg: MqttFile, channels: list[MqttChannel]) -> MqttChannel:
    channel = MqttChannel(hub, cfg)
    channels.append(channel)
    channel.start()
    assert channel.wait_subscribed(30), "the broker did not grant the subscriptions"
    return channel


def stop(channel: MqttChannel, channels: list[MqttChannel]) -> None:
    channel.stop()
    channels.remove(channel)


def wait_until(predicate: Any, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def rows(hub: Hub) -> list[Any]:
    with hub.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id, source, channel, status, error, body, dedupe_key FROM inbound_message "
            "ORDER BY seq")).all())


def test_qos1_message_is_stored_acked_and_becomes_an_observation(
    hub: Hub, system_broker: tuple[str, int], prefix: str, channels: list[MqttChannel]
) -> None:
    cfg = config(prefix, system_broker, [{"filter": f"{prefix}/devices/+/readings",
                                          "source": "hub"}])
    channel = start(hub, cfg, channels)
    body = orjson.dumps(canonical(2, device=f"{prefix}-cuff", patient=f"{prefix}-pat"))
    publish(*system_broker, f"{prefix}/devices/cuff-1/readings", body)
    wait_until(lambda: channel.stats.acked == 1, what="the PUBACK")

    (row,) = rows(hub)
    assert (row.source, row.channel, row.status, row.error) == ("hub", "mqtt", "received", None)
    assert bytes(row.body) == body  # the raw payload, as received
    drain(hub.pipeline, hub.engine, 16)
    message = inbox.get(hub.engine, row.id)
    assert message is not None and message["status"] == "processed"
    observations = [r for r in message["resources"] if r.startswith("Observation/")]
    assert len(observations) >= 2  # the two heart-rate readings (rules may add derived ones)

    key = api_keys.create(hub.engine, TEST_SECRET, "reader", ["hub"])
    with TestClient(create_app(hub, inline_worker=False)) as client:
        found = client.get("/fhir/Observation?code=http://loinc.org|8867-4&_count=10",
                           headers=auth(key)).json()
    served = {f"Observation/{e['resource']['id']}" for e in found.get("entry", [])}
    assert len(served) == 2 and served <= set(observations)
    for entry in found["entry"]:
        assert entry["resource"]["meta"]["source"].endswith(row.id)  # lineage to the message


def test_bad_messages_are_kept_with_the_reason_and_acknowledged(
    db_url: str, system_broker: tuple[str, int], prefix: str, channels: list[MqttChannel]
) -> None:
    hub = Hub.build(make_settings(db_url, max_body_bytes=2000), Telemetry.disabled())
    try:
        subs = [{"filter": f"{prefix}/hub/#", "source": "hub"},
                {"filter": f"{prefix}/withings/#", "source": "withings"},
                {"filter": f"{prefix}/retired/#", "source": "hub"}]
        first = start(hub, config(prefix, system_broker, subs), channels)
        stop(first, channels)  # the broker keeps all three subscriptions in the session
        # The retired filter is taken out of the file; the broker still delivers it.
        cfg = config(prefix, system_broker, subs[:2])
        channel = start(hub, cfg, channels)
        reading = orjson.dumps(canonical(1, device=f"{prefix}-d"))
        publish(*system_broker, f"{prefix}/hub/d1", b"{not json")
        publish(*system_broker, f"{prefix}/withings/u1", reading)  # wrong connector
        publish(*system_broker, f"{prefix}/hub/d2", b"[" + b"1," * 1500 + b"1]")  # > 2000 bytes
        publish(*system_broker, f"{prefix}/retired/d3", reading)
        wait_until(lambda: channel.stats.acked == 4, what="four PUBACKs")

        got = sorted((r.source, r.status, r.error) for r in rows(hub))
        assert got == [
            ("hub", "failed",
             "body is not JSON (unexpected character, expected a string key at character 1)"),
            ("hub", "failed", "payload of 3003 bytes exceeds the 2000-byte limit"),
            ("mqtt", "failed", f"no subscription routes topic '{prefix}/retired/d3'"),
            ("withings", "failed", got[3][2]),
        ]
        assert got[3][2].startswith("$: not in the account envelope;")  # wrong connector
        assert channel.stats.refused == 4
        drain(hub.pipeline, hub.engine, 16)  # the worker leaves failed messages alone
        assert {r.status for r in rows(hub)} == {"failed"}

        # Acknowledged: a new connection on the same session gets none of them again.
        stop(channel, channels)
        again = start(hub, cfg, channels)
        time.sleep(1.5)
        assert again._subscriber.stats.sessions_resumed == 1
        assert again._subscriber.stats.deliveries == 0
        assert len(rows(hub)) == 4
    finally:
        hub.engine.dispose()


def test_repeats_are_stored_once(
    hub: Hub, system_broker: tuple[str, int], prefix: str, channels: list[MqttChannel]
) -> None:
    cfg = config(prefix, system_broker, [
        {"filter": f"{prefix}/keyed/#", "source": "hub", "dedupe_property": "message-id"},
        {"filter": f"{prefix}/plain/#", "source": "hub"}])
    channel = start(hub, cfg, channels)
    one = orjson.dumps(canonical(1, device=f"{prefix}-a"))
    two = orjson.dumps(canonical(1, device=f"{prefix}-b"))
    # Same publisher message id, different bytes (a re-encoded retry): one message.
    publish(*system_broker, f"{prefix}/keyed/a", one, user_properties=[("message-id", "m-1")])
    publish(*system_broker, f"{prefix}/keyed/a", two, user_properties=[("message-id", "m-1")])
    # Same bytes on one topic twice: one message; the same bytes on another topic: another.
    publish(*system_broker, f"{prefix}/plain/a", one)
    publish(*system_broker, f"{prefix}/plain/a", one)
    publish(*system_broker, f"{prefix}/plain/b", one)
    wait_until(lambda: channel.stats.acked == 5, what="five PUBACKs")

    stored = rows(hub)
    assert len(stored) == 3
    assert stored[0].dedupe_key == "mqtt:message-id:m-1" and bytes(stored[0].body) == one
    assert channel.stats.duplicates == 2


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_messages_published_while_the_channel_is_away_arrive_on_reconnect(
    hub: Hub, system_broker: tuple[str, int], prefix: str, channels: list[MqttChannel],
    protocol: str
) -> None:
    cfg = config(prefix, system_broker, [{"filter": f"{prefix}/#", "source": "hub"}], protocol)
    stop(start(hub, cfg, channels), channels)
    bodies = [orjson.dumps(canonical(1, device=f"{prefix}-{n}")) for n in range(3)]
    for n, body in enumerate(bodies):
        publish(*system_broker, f"{prefix}/dev/{n}", body)  # nobody is connected

    channel = start(hub, cfg, channels)
    wait_until(lambda: channel.stats.acked == 3, what="the queued messages")
    assert channel._subscriber.stats.sessions_resumed == 1
    assert sorted(bytes(r.body) for r in rows(hub)) == sorted(bodies)


def test_a_shared_subscription_splits_the_stream_between_hubs_without_duplicates(
    hub: Hub, system_broker: tuple[str, int], prefix: str, channels: list[MqttChannel]
) -> None:
    shared = [{"filter": f"$share/{prefix}/{prefix}/devices/#", "source": "hub"}]
    one = start(hub, config(prefix, system_broker, shared), channels)
    two = start(hub, config(f"{prefix}-2", system_broker, shared), channels)
    try:
        bodies = [orjson.dumps(canonical(1, device=f"{prefix}-{n}")) for n in range(20)]
        for n, body in enumerate(bodies):
            publish(*system_broker, f"{prefix}/devices/{n}", body)
        wait_until(lambda: one.stats.acked + two.stats.acked == 20, what="twenty PUBACKs")
        assert one.stats.stored and two.stats.stored  # each hub took its share
        assert sorted(bytes(r.body) for r in rows(hub)) == sorted(bodies)
        assert one.stats.duplicates == two.stats.duplicates == 0
    finally:
        for channel in (one, two):
            stop(channel, channels)
        purge_session(*system_broker, f"{prefix}-2")


def test_the_topic_is_kept_with_the_message_and_mappings_read_it_as_meta(
    db_url: str, tmp_path: Path, system_broker: tuple[str, int], prefix: str,
    channels: list[MqttChannel]
) -> None:
    # The iomt mapping, in a copy, falls back to the topic's second level for the device id.
    mappings = iomt_reading_the_topic(mappings_with_topic_device(tmp_path))
    hub = Hub.build(make_settings(db_url, mappings_dir=mappings), Telemetry.disabled())
    try:
        cfg = config(prefix, system_broker, [{"filter": f"{prefix}/+/vitals", "source": "iomt"}])
        channel = start(hub, cfg, channels)
        topic = f"{prefix}/cuff-9/vitals"
        publish(*system_broker, topic, orjson.dumps(IOMT_EVENT))
        wait_until(lambda: channel.stats.acked == 1, what="the PUBACK")
        with hub.engine.connect() as conn:
            (raw,) = inbox.claim(conn, 10, lock=False)
        assert raw.meta == {"channel": "mqtt", "topic": topic,
                            "topic_levels": [prefix, "cuff-9", "vitals"]}
        drain(hub.pipeline, hub.engine, 8)
        message = inbox.get(hub.engine, raw.id)
        # the device came from the topic (the event names none): it waits for its patient
        assert message is not None
        assert (message["status"], message["error"]) == ("quarantined",
                                                         "items[0]: unassigned device")
        with hub.engine.connect() as conn:  # ...and is registered under the topic's name
            assert registry.lookup(conn, "Device", Identifier(IOMT_SYSTEM, "cuff-9")) \
                == registry_id("Device", Identifier(IOMT_SYSTEM, "cuff-9"))
        assign_device(hub.engine, Identifier(IOMT_SYSTEM, "cuff-9"),
                      Identifier("urn:example:patient", "p-9"), datetime(2026, 1, 1, tzinfo=UTC))
        inbox.requeue(hub.engine, status=inbox.STATUS_QUARANTINED)
        drain(hub.pipeline, hub.engine, 8)
        message = inbox.get(hub.engine, raw.id)
        assert message is not None and message["status"] == "processed", message["error"]
    finally:
        hub.engine.dispose()
