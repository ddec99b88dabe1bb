"""HL7v2 out: ORU^R01 over MLLP to a real MLLP peer (the hub's own listener), with ACK handling
and escaping of hostile values."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse

from connectors.mllp import MllpListener
from hub.hl7v2 import AckCode, AckError, ErrorCode, build_ack, parse_message
from hub.runtime import Hub
from hub.store import delivery
from hub.sync.config import Hl7v2Destination
from hub.sync.hl7out import build_oru
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker
from tests.sync.conftest import observation, outbox_rows, seed, write_config

HOSTILE = "a|b^c&d~e\\f\rOBX|99|ST|x\ny"


class Peer:
    """An interface engine: records OBX-5 values; AE for value 999; the first message unanswered
    (no ACK → the hub must retry)."""

    def __init__(self) -> None:
        self.values: list[tuple[str, str]] = []
        self.control_ids: list[str] = []
        self.silent_first = True
        self.loop = asyncio.new_event_loop()
        self.listener: MllpListener | None = None

    async def on_message(self, payload: bytes) -> bytes:
        msg = parse_message(payload)
        if self.silent_first:
            self.silent_first = False
            await asyncio.sleep(2.0)  # longer than the hub's ACK timeout
        self.control_ids.append(msg.control_id)
        for obx in msg.segments_named("OBX"):
            self.values.append((msg.get("PID", 3), obx.text(5)))
            if obx.text(5) == "999":
                return build_ack(msg, AckCode.AE, errors=[AckError(
                    ErrorCode.APPLICATION_INTERNAL_ERROR, "value out of range for this unit",
                    "OBX", 1, 5)])
        return build_ack(msg, AckCode.AA)

    def __enter__(self) -> Peer:
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start() -> int:
            self.listener = MllpListener("127.0.0.1", 0, on_message=self.on_message)
            await self.listener.start()
            return self.listener.port

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.listener is not None
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_oru_escapes_every_delimiter_and_line_break_and_validates_with_hl7apy() -> None:
    obs = observation(1, 1)
    obs.pop("valueQuantity")
    obs["valueString"] = HOSTILE
    dest = Hl7v2Destination(name="ie", type="hl7v2", host="127.0.0.1", port=1)
    message = build_oru(obs, 1, dest)
    segments = message.decode().rstrip("\r").split("\r")
    assert [s[:3] for s in segments] == ["MSH", "PID", "OBR", "OBX"]  # no injected segment
    parsed = parse_message(message)
    (obx,) = parsed.segments_named("OBX")
    assert obx.text(5) == HOSTILE  # round-trips exactly
    assert "\\F\\" in obx.raw(5) and "\\X0D\\" in obx.raw(5)
    strict = hl7apy_parse(message.decode(), validation_level=VALIDATION_LEVEL.STRICT,
                          find_groups=True)
    strict.validate()


def test_bp_panel_becomes_one_obx_per_component() -> None:
    dest = Hl7v2Destination(name="ie", type="hl7v2", host="127.0.0.1", port=1)
    parsed = parse_message(build_oru(observation(1, 2, components=True), 1, dest))
    assert [o.component(3, 1) for o in parsed.segments_named("OBX")] == ["8480-6", "8462-4"]
    assert parsed.get("OBR", 4) == "85354-9"


@pytest.mark.slow
def test_oru_over_mllp_aa_delivered_ae_dead_lettered_no_ack_retried(
        hub: Hub, tmp_path: Path) -> None:
    with Peer() as peer:
        config = write_config(tmp_path, (
            "destinations:\n  - name: ie\n    type: hl7v2\n    host: 127.0.0.1\n"
            f"    port: {peer.port}\n    ack_timeout_secs: 0.5\n"
            "    limits: {bundle_size: 5, max_backoff_secs: 0.2, circuit_open_secs: 0.3}\n"))
        router = OutboxRouter.from_config(config)
        made = seed(hub, router, patients=2, per_patient=4)
        rejected = observation(0, 9)
        rejected["valueQuantity"]["value"] = 999
        from hub.store import outbox, resources
        from hub.store.db import write_tx
        with write_tx(hub.engine) as conn:
            outbox.enqueue(conn, router.route(resources.upsert(conn, [rejected], "m")))
        worker = SyncWorker(hub.engine, config)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            worker.drain("ie")
            statuses = {r.status for r in outbox_rows(hub)}
            if statuses <= {"delivered", "dead"}:
                break
            time.sleep(0.1)
        rows = outbox_rows(hub)
        assert [r.status for r in rows].count("delivered") == len(made)
        dead = delivery.list_dead(hub.engine, destination="ie")
        assert len(dead) == 1 and dead[0]["reason"].startswith("AE")
        assert "out of range" in dead[0]["reason"]
        # The unanswered first message was sent again with the same control id (receivers
        # dedupe on MSH-10), and in the end each reading reached the peer.
        assert len(set(peer.control_ids)) == len(made) + 1
        got: dict[str, Any] = {}
        for pid, value in peer.values:
            got.setdefault(pid, []).append(value)
        assert sorted(got) == ["p0", "p1"]
        worker.close()
