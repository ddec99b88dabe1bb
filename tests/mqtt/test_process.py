"""The MQTT channel as an operator runs it (``hub mqtt`` / ``hub serve`` subprocesses) against
our own Mosquitto, which the tests kill and restart. The broker's log (every packet) is its own
record of which PUBLISH it sent the hub and which PUBACK came back.

- kill -9 after the PUBACK: the message is still there, and ``hub serve`` processes it, together
  with a message published while no hub was running (persistent session);
- no PUBACK before the durable write: with the inbox blocked the broker gets no PUBACK; the hub
  is killed; the broker sends the message again to the next hub, which stores it once;
- broker restarts: the hub reconnects by itself, its session (and what was queued in it while
  the hub was disconnected or down) survives, and every message is stored exactly once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hub.store.db import upgrade
from tests.hubproc import HubProcess, free_port, hub_command, hub_env
from tests.mqtt.conftest import OwnBroker, publish
from tests.readings import canonical

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

HUB_ID = "hub-under-test"  # the hub's client id: names its session and its lines in the log
HR = "http://loinc.org|8867-4"


def write_config(tmp_path: Path, broker: OwnBroker, reconnect_secs: int = 3) -> Path:
    path = tmp_path / "mqtt.yaml"
    path.write_text(
        f"version: 1\nbroker:\n  host: 127.0.0.1\n  port: {broker.port}\n"
        f"  client_id: {HUB_ID}\n  reconnect_min_secs: {reconnect_secs}\n"
        f"  reconnect_max_secs: {reconnect_secs}\n"
        "subscriptions:\n  - filter: devices/+/readings\n    source: hub\n")
    return path


def reading(n: int) -> bytes:
    return orjson.dumps(canonical(1, device=f"mqtt-dev-{n}", patient=f"mqtt-pat-{n}", start=n))


def inbox_rows(engine: Engine) -> list[tuple[bytes, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT body, status, attempts FROM inbound_message "
                                 "ORDER BY seq")).all()
    return [(bytes(r.body), r.status, r.attempts) for r in rows]


def wait_until(predicate: object, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sa_url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    built = create_engine(sa_url(db_url))
    yield built
    built.dispose()


@contextmanager
def inbox_blocked(db_url: str, engine: Engine) -> Iterator[None]:
    """Hold the lock every inbox write needs (SQLite: the write lock; PostgreSQL: the table)."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE inbound_message IN ACCESS EXCLUSIVE MODE"))
            yield


def test_kill_9_after_puback_loses_nothing_and_serve_gets_what_came_while_down(
    db_url: str, engine: Engine, own_broker: OwnBroker, tmp_path: Path
) -> None:
    env = hub_env(db_url, HUB_MQTT_FILE=str(write_config(tmp_path, own_broker)))
    first = HubProcess(env, tmp_path / "mqtt-1.log", "mqtt", "--no-migrate")  # no worker
    try:
        first.wait_for_log("MQTT subscribed to devices/+/readings")
        publish("127.0.0.1", own_broker.port, "devices/a/readings", reading(1))
        own_broker.wait_for(f"Received PUBACK from {HUB_ID}")
        assert [r[0] for r in inbox_rows(engine)] == [reading(1)]  # committed before the ack
        first.kill_9()
    finally:
        if first.alive():
            first.kill_9()
    publish("127.0.0.1", own_broker.port, "devices/b/readings", reading(2))  # no hub running

    key = hub_command(env, "keys", "create", "--name", "reader", "--source", "hub").strip()
    port = free_port()
    serve = HubProcess(env, tmp_path / "serve.log", "serve", "--host", "127.0.0.1", "--port",
                       str(port), "--no-migrate", "--no-mllp")
    try:
        serve.wait_http(f"http://127.0.0.1:{port}")

        def observations() -> list[dict[str, object]]:
            found = httpx.get(f"http://127.0.0.1:{port}/fhir/Observation",
                              params={"code": HR, "_count": "10"},
                              headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
            return [e["resource"] for e in found.get("entry", [])]

        wait_until(lambda: len(observations()) == 2, what="both Observations via FHIR")
        serve.wait_for_log("MQTT connected to")
        assert "session resumed" in serve.output()
    finally:
        serve.stop()
    assert sorted(inbox_rows(engine)) == sorted([(reading(1), "processed", 1),
                                                 (reading(2), "processed", 1)])
    assert own_broker.count(f"Received PUBACK from {HUB_ID}") == 2
    for output in (first.output(), serve.output()):  # no topic (device ids), no payload
        assert "devices/a/" not in output and "devices/b/" not in output
        assert "mqtt-dev-" not in output and "mqtt-pat-" not in output


def test_no_puback_before_the_durable_write(
    db_url: str, engine: Engine, own_broker: OwnBroker, tmp_path: Path
) -> None:
    env = hub_env(db_url, HUB_MQTT_FILE=str(write_config(tmp_path, own_broker)))
    first = HubProcess(env, tmp_path / "mqtt-1.log", "mqtt", "--no-migrate")
    try:
        first.wait_for_log("MQTT subscribed to devices/+/readings")
        with inbox_blocked(db_url, engine):
            publish("127.0.0.1", own_broker.port, "devices/a/readings", reading(1))
            own_broker.wait_for(f"Sending PUBLISH to {HUB_ID}")  # the hub has it...
            time.sleep(1.5)  # ...and would have acknowledged it by now if it did not wait
            assert own_broker.count(f"Received PUBACK from {HUB_ID}") == 0
            first.kill_9()  # crash while the write waits
    finally:
        if first.alive():
            first.kill_9()
    assert inbox_rows(engine) == []

    second = HubProcess(env, tmp_path / "mqtt-2.log", "mqtt", "--no-migrate")
    try:
        own_broker.wait_for(f"Received PUBACK from {HUB_ID}")
        assert [r[0] for r in inbox_rows(engine)] == [reading(1)]
        assert own_broker.count(f"Sending PUBLISH to {HUB_ID} (d1") == 1  # resent as DUP
    finally:
        second.stop()
    assert [r[0] for r in inbox_rows(engine)] == [reading(1)]


def test_broker_restarts_lose_nothing_and_duplicate_nothing(
    own_broker: OwnBroker, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path}/hub.db"
    upgrade(db_url)
    engine = create_engine(db_url)
    # The hub retries every 5 s: time for the test to restart the broker and publish first.
    config = write_config(tmp_path, own_broker, reconnect_secs=5)
    env = hub_env(db_url, HUB_MQTT_FILE=str(config))
    hub = HubProcess(env, tmp_path / "mqtt-1.log", "mqtt", "--worker", "--no-migrate")
    try:
        hub.wait_for_log("MQTT subscribed to devices/+/readings")
        publish("127.0.0.1", own_broker.port, "devices/a/readings", reading(1))
        own_broker.wait_for(f"Received PUBACK from {HUB_ID}")

        # 1. The broker restarts under a running hub; a message is published before the hub
        #    is back: the resumed session holds it for the hub.
        own_broker.stop()
        hub.wait_for_log("MQTT disconnected")
        own_broker.start()
        publish("127.0.0.1", own_broker.port, "devices/b/readings", reading(2))
        log = own_broker.log_text()
        assert f"as {HUB_ID}" not in log.split("mosquitto version")[-1]  # not reconnected yet
        own_broker.wait_for(f"Received PUBACK from {HUB_ID}", times=2)
        wait_until(lambda: hub.output().count("(session resumed)") == 1, what="resumed")
    finally:
        hub.stop()

    # 2. The hub is down while a message is published and the broker restarts: it waits in the
    #    broker's persisted session and reaches the next hub.
    publish("127.0.0.1", own_broker.port, "devices/c/readings", reading(3))
    own_broker.stop()
    own_broker.start()
    hub = HubProcess(env, tmp_path / "mqtt-2.log", "mqtt", "--worker", "--no-migrate")
    try:
        own_broker.wait_for(f"Received PUBACK from {HUB_ID}", times=3)
        wait_until(lambda: {r[1] for r in inbox_rows(engine)} == {"processed"}
                   and len(inbox_rows(engine)) == 3, what="all three processed")
        time.sleep(1)  # anything sent again would arrive now
    finally:
        hub.stop()
    assert sorted(inbox_rows(engine)) == [(reading(n), "processed", 1) for n in (1, 2, 3)]
    engine.dispose()
