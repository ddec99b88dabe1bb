"""HL7v2 enhanced mode: the deferred application ACK, sent to the sender's return address over
real TCP after the accept ACK, through the outbox (durable, retried, dead-lettered).

The peer is a real MLLP listener standing in for the sender's own listener: it records each
ACK it is sent and answers with an accept ACK (or refuses, or stays down)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.mllp import MllpClient, MllpListener
from hub.channels.hl7_intake import examine, store_now
from hub.hl7v2 import AckCode, Message, build_ack, parse_message
from hub.runtime import Hub
from hub.store import delivery, inbox
from hub.store.replies import Ended
from hub.sync.hl7ack import build_app_ack
from hub.sync.worker import SyncWorker
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import make_settings
from tests.hl7v2_fhir.test_mllp_channel import HOST, with_channel

GOOD_OBX = "OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F|||20240105095900+0000"
BAD_OBX = "OBX|2|ED|8310-5^Body temperature^LN||^AP^Octet-stream^Base64^AAAA||||||F"


def oru(ctrl: str, accept: str, application: str, *, bad: bool = False, app: str = "LAB",
        facility: str = "NORTH") -> bytes:
    segments = [f"MSH|^~\\&|{app}|{facility}|HUB|HOSP|20240105100000+0000||ORU^R01^ORU_R01|"
                f"{ctrl}|P|2.5.1|||{accept}|{application}",
                "PID|1||MRN-1^^^H&1.2.3&ISO^MR", "OBR|1", GOOD_OBX]
    if bad:
        segments.append(BAD_OBX)
    return ("\r".join(segments) + "\r").encode()


class Peer:
    """The sender's listener: records what it is sent; answers CA, or ``answer`` if set."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.answer: AckCode | None = AckCode.CA
        self.loop = asyncio.new_event_loop()
        self.listener: MllpListener | None = None
        self.port = 0

    async def on_message(self, payload: bytes) -> bytes:
        msg = parse_message(payload)
        self.received.append(msg)
        return build_ack(msg, self.answer) if self.answer is not None else b""

    def start(self, port: int = 0) -> Peer:
        if not self.loop.is_running():
            threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start() -> int:
            self.listener = MllpListener(HOST, port, on_message=self.on_message)
            await self.listener.start()
            return int(self.listener.port)

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if self.listener is not None:
            asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(30)
            self.listener = None


@pytest.fixture
def peer() -> Iterator[Peer]:
    found = Peer().start()
    yield found
    found.stop()
    found.loop.call_soon_threadsafe(found.loop.stop)


def ack_hub(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: int,
            extra: str = "") -> Hub:
    path = tmp_path / "destinations.yaml"
    path.write_text(
        "destinations:\n  - name: lab-acks\n    type: hl7v2-ack\n    host: 127.0.0.1\n"
        f"    port: {port}\n    ack_timeout_secs: 0.5\n"
        "    match: {sending_application: LAB}\n"
        "    limits: {max_backoff_secs: 0.2, circuit_open_secs: 0.2}\n" + extra)
    monkeypatch.setenv("HUB_DESTINATIONS_FILE", str(path))
    return Hub.build(make_settings(db_url), Telemetry.disabled())


def store(hub: Hub, body: bytes) -> tuple[str, bytes]:
    """The intake's own path (``POST /hl7v2`` uses it): returns (message id, immediate ACK)."""
    door = examine(body, hub.connectors.get("hl7v2"))
    stored = store_now(hub.engine, door, body, channel="http", client=None, traceparent=None,
                       window=86400.0)
    return stored.message_id, stored.reply


def deliver(hub: Hub, name: str = "lab-acks", *, until: set[str] | None = None) -> None:
    worker = SyncWorker(hub.engine, hub.destinations)
    deadline = time.monotonic() + 20
    try:
        while True:
            worker.drain(name)
            statuses = {s for by in delivery.counts(hub.engine).values() for s in by}
            if until is None or statuses <= until or time.monotonic() > deadline:
                return
            time.sleep(0.05)
    finally:
        worker.close()


def test_accept_ack_on_the_connection_then_the_application_ack_at_the_return_address(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer: Peer) -> None:
    hub = ack_hub(db_url, tmp_path, monkeypatch, peer.port)

    async def body(channel) -> None:  # type: ignore[no-untyped-def]
        async with MllpClient(HOST, channel.port) as client:
            ack = parse_message(await client.send(oru("E01", "AL", "AL")))
        assert (ack.get("MSA", 1), ack.get("MSA", 2)) == ("CA", "E01")

    with_channel(hub, body)
    assert peer.received == []  # nothing is owed before the message is processed
    drain(hub.pipeline, hub.engine, 10)
    deliver(hub, until={"delivered"})
    (app_ack,) = peer.received
    msh = app_ack.msh
    assert (app_ack.get("MSA", 1), app_ack.get("MSA", 2)) == ("AA", "E01")
    assert app_ack.message_type == "ACK" and app_ack.trigger_event == "R01"
    assert (msh.field(3), msh.field(4), msh.field(5), msh.field(6)) == (
        "HUB", "HOSP", "LAB", "NORTH")
    assert (msh.field(15), msh.field(16)) == ("AL", "NE")  # it asks for the sender's CA
    (row,) = inbox_rows(hub)
    lineage = delivery.lineage(hub.engine, [f"hl7v2-ack/{row}"])
    assert lineage[f"hl7v2-ack/{row}"][0]["status"] == "delivered"
    hub.engine.dispose()


def inbox_rows(hub: Hub) -> list[str]:
    from sqlalchemy import select

    from hub.store.models import InboundMessage
    with hub.engine.connect() as conn:
        return list(conn.execute(select(InboundMessage.id)).scalars())


@pytest.mark.parametrize(("accept", "application", "bad", "expected"), [
    ("AL", "AL", False, "AA"), ("AL", "AL", True, "AE"),
    ("AL", "ER", False, None), ("AL", "ER", True, "AE"),
    ("AL", "SU", False, "AA"), ("AL", "SU", True, None),
    ("NE", "ER", True, "AE"),  # nothing at the door; the error is reported once found
    ("NE", "AL", False, None),  # IHE PCD-01: the door's AA was the application ACK
    ("NE", "NE", True, None), ("", "", True, None),  # original mode: the door's AA/AE only
])
def test_msh16_conditions_decide_the_deferred_ack(
        accept: str, application: str, bad: bool, expected: str | None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, peer: Peer) -> None:
    hub = ack_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, monkeypatch, peer.port)
    from hub.store.db import upgrade
    upgrade(str(hub.engine.url))
    _, immediate = store(hub, oru("E02", accept, application, bad=bad))
    drain(hub.pipeline, hub.engine, 10)
    deliver(hub, until={"delivered"})
    codes = [m.get("MSA", 1) for m in peer.received]
    assert codes == ([expected] if expected else [])
    if expected == "AE":
        (err,) = peer.received[0].segments_named("ERR")
        assert (err.component(2, 1), err.component(2, 2), err.component(2, 3)) == (
            "OBX", "2", "2")  # the second OBX's value type, named as the worker found it
        assert err.component(3, 1) == "102" and err.field(4) == "E"
    if immediate:
        assert parse_message(immediate).get("MSA", 1) in ("CA", "AA")
    hub.engine.dispose()


def test_peer_down_is_retried_with_the_same_bytes_and_a_refusal_is_dead_lettered(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer: Peer) -> None:
    port = peer.port
    peer.stop()
    hub = ack_hub(db_url, tmp_path, monkeypatch, port)
    first, _ = store(hub, oru("E03", "AL", "AL"))
    drain(hub.pipeline, hub.engine, 10)
    deliver(hub)  # the return address is down: the row waits, nothing is lost
    (pending,) = delivery.lineage(hub.engine, [f"hl7v2-ack/{first}"])[f"hl7v2-ack/{first}"]
    assert pending["status"] == "pending" and pending["attempts"] >= 1 and pending["lastError"]
    peer.start(port)
    deliver(hub, until={"delivered"})
    assert [m.get("MSA", 2) for m in peer.received] == ["E03"]
    # The sender refuses the second ACK: dead-lettered with its reason, replayable.
    peer.answer = AckCode.CR
    second, _ = store(hub, oru("E04", "AL", "AL"))
    drain(hub.pipeline, hub.engine, 10)
    deliver(hub, until={"delivered", "dead"})
    (dead,) = delivery.list_dead(hub.engine, destination="lab-acks")
    assert dead["reason"].startswith("CR") and dead["messageId"] == second
    peer.answer = AckCode.CA
    assert delivery.replay_dead(hub.engine, [dead["id"]]) == 1
    deliver(hub, until={"delivered"})
    resent = [m for m in peer.received if m.get("MSA", 2) == "E04"]
    assert len(resent) == 2 and resent[0].control_id == resent[1].control_id
    hub.engine.dispose()


def test_only_configured_senders_get_application_acks_and_ne_sends_without_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer: Peer) -> None:
    peer.answer = None  # told MSH-15 NE: it must not answer, and the hub must not wait
    extra = ("  - name: ward-acks\n    type: hl7v2-ack\n    host: 127.0.0.1\n"
             f"    port: {peer.port}\n    accept_ack: NE\n    match: {{sending_facility: WARD}}\n")
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    from hub.store.db import upgrade
    upgrade(url)
    hub = ack_hub(url, tmp_path, monkeypatch, peer.port, extra)
    store(hub, oru("E05", "AL", "AL", app="MONITOR", facility="WARD"))
    store(hub, oru("E06", "AL", "AL", app="OTHER", facility="ELSEWHERE"))  # no return address
    drain(hub.pipeline, hub.engine, 10)
    assert delivery.counts(hub.engine) == {"ward-acks": {"pending": 1}}
    started = time.monotonic()
    deliver(hub, "ward-acks", until={"delivered"})
    assert time.monotonic() - started < 5
    assert delivery.counts(hub.engine) == {"ward-acks": {"delivered": 1}}
    deadline = time.monotonic() + 5
    while not peer.received and time.monotonic() < deadline:
        time.sleep(0.02)
    (app_ack,) = peer.received
    assert app_ack.get("MSA", 2) == "E05" and app_ack.msh.field(15) == "NE"
    assert inbox.counts_by_status(hub.engine) == {"processed": 2}
    hub.engine.dispose()


def test_an_internal_error_is_answered_ar_with_code_207() -> None:
    body = oru("E07", "AL", "AL")
    reason = "internal error (KeyError); see logs for message m-1"
    ack = parse_message(build_app_ack("m-1", Ended(body, "failed", reason,
                                                    datetime(2024, 1, 5, tzinfo=UTC)), "AL"))
    (err,) = ack.segments_named("ERR")
    assert ack.get("MSA", 1) == "AR" and err.component(3, 1) == "207"
    assert ack.msh.field(7) == "20240105000000+0000"  # when it was processed: stable bytes


def test_an_ack_destination_takes_no_resources(tmp_path: Path) -> None:
    from hub.errors import ConfigurationError
    from hub.sync.config import load_destinations
    path = tmp_path / "destinations.yaml"
    path.write_text("destinations:\n  - name: acks\n    type: hl7v2-ack\n    host: h\n"
                    "    port: 1\n    route: {resource_types: [Observation]}\n")
    with pytest.raises(ConfigurationError) as caught:
        load_destinations(path)
    assert "takes no resources" in str(caught.value.problems)
