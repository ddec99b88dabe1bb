"""kill -9 mid-stream (anchor cases 1 and 14): nothing acknowledged is lost, nothing duplicated.

The hub runs as an operator runs it (``python -m hub serve|worker`` subprocesses) on SQLite and
on PostgreSQL. Proofs, counted in the database afterwards:

- every reading whose POST got 202 is stored exactly once, as the Observation with its
  deterministic id (identifier ``urn:uuid:<id>``), at version 1;
- a POST cut off by the kill (no answer) is stored at most once — never half, never twice;
- no message is left in ``received``, and each was committed once (``attempts`` = 1: the count
  is incremented in the transaction that stores the message's resources, so a batch rolled back
  by the kill and redone later still counts one);
- after a worker killed in the middle of a backlog, the restarted worker processes exactly the
  messages the first one had not committed (its own logged count).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hub.contracts import Identifier
from hub.fhir.ids import observation_id, registry_id
from tests.hubproc import HubProcess, free_port, hub_command, hub_env, inbox_statuses, wait_drained
from tests.readings import BASE_TIME, canonical

pytestmark = pytest.mark.slow

HEART_RATE = "8867-4"  # LOINC: every reading these tests post (rules derive other codes)
DEVICE_SYSTEM = "urn:iomt-fhir-hub:device"
PATIENT_SYSTEM = "urn:iomt-fhir-hub:patient"
PER_BODY = 10


def expected_id(device: str, patient: str, minute: int) -> str:
    """The deterministic Observation id of a canonical heart-rate reading (tests.readings)."""
    patient_id = registry_id("Patient", Identifier(PATIENT_SYSTEM, patient))
    return observation_id(Identifier(DEVICE_SYSTEM, device), patient_id, "heart-rate",
                          BASE_TIME + timedelta(minutes=minute))


def body_ids(client: int, seq: int) -> tuple[bytes, set[str]]:
    """Body ``seq`` of client ``client`` (distinct readings everywhere) and its Observation ids."""
    device, patient, start = f"crash-dev-{client}", f"crash-pat-{client}", seq * PER_BODY
    body = orjson.dumps(canonical(PER_BODY, device=device, patient=patient, start=start))
    return body, {expected_id(device, patient, m) for m in range(start, start + PER_BODY)}


@dataclass
class Ledger:
    """What the clients know: acknowledged readings, and those whose POST got no answer."""

    acked: set[str] = field(default_factory=set)
    acked_messages: set[str] = field(default_factory=set)
    in_doubt: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    cut_off: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def post_until_cut_off(base_url: str, key: str, client: int, ledger: Ledger) -> None:
    """Post distinct bodies until the server goes away under this client."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        for seq in range(100_000):
            body, ids = body_ids(client, seq)
            try:
                answer = http.post("/ingest/hub", content=body)
            except httpx.TransportError:
                with ledger.lock:  # sent (maybe only partly): stored at most once, or not at all
                    ledger.in_doubt |= ids
                    ledger.cut_off += 1
                return
            with ledger.lock:
                if answer.status_code == 202:
                    ledger.acked |= ids
                    ledger.acked_messages.add(answer.json()["messageId"])
                else:
                    ledger.refused.append(f"{answer.status_code} {answer.text[:200]}")
                    return


def observations(engine: Engine) -> dict[str, tuple[int, list[str]]]:
    """Reading Observation id → (version, identifier values), straight from the store."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT res_id, version_id, content FROM resource "
                                 "WHERE res_type = 'Observation' AND code = :code"),
                            {"code": HEART_RATE}).all()
    return {r.res_id: (r.version_id, [i["value"] for i in orjson.loads(r.content)["identifier"]])
            for r in rows}


def assert_each_message_committed_once(engine: Engine, messages: int) -> None:
    assert inbox_statuses(engine) == {"processed": messages}
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT min(attempts), max(attempts) "
                                     "FROM inbound_message")).one()
        versions = conn.execute(text(
            "SELECT max(version_id) FROM resource WHERE res_type IN ('Patient', 'Device') "
            "OR (res_type = 'Observation' AND code = :code)"), {"code": HEART_RATE}).scalar()
    assert tuple(attempts) == (1, 1)
    assert versions == 1  # no reading stored twice, not even its Patient or Device


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def sa_url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://")


def test_kill_9_serve_mid_stream_keeps_every_acknowledged_reading_once(
    db_url: str, tmp_path: Path
) -> None:
    env = hub_env(db_url, HUB_WORKER_BATCH="8")
    key = hub_command(env, "keys", "create", "--name", "crash", "--source", "hub").strip()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    serve_args = ("serve", "--host", "127.0.0.1", "--port", str(port), "--no-migrate")
    engine = create_engine(sa_url(db_url))
    ledger = Ledger()
    first = HubProcess(env, tmp_path / "serve-1.log", *serve_args)  # API + inline worker
    try:
        first.wait_http(base_url)
        clients = [threading.Thread(target=post_until_cut_off, args=(base_url, key, n, ledger))
                   for n in range(6)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while len(ledger.acked_messages) < 60 or inbox_statuses(engine).get("processed", 0) < 5:
            assert time.monotonic() < deadline and not ledger.refused, ledger.refused
            time.sleep(0.01)
        first.kill_9()  # mid-stream: posts in flight, the worker between or inside batches
        for thread in clients:
            thread.join(timeout=60)
    finally:
        if first.alive():
            first.kill_9()
    assert not ledger.refused
    assert ledger.cut_off == 6  # every client was still posting when the server died

    second = HubProcess(env, tmp_path / "serve-2.log", *serve_args)
    try:
        second.wait_http(base_url)
        wait_drained(engine, [second])
    finally:
        second.stop()

    stored = observations(engine)
    assert ledger.acked <= stored.keys()  # every acknowledged reading is there...
    assert stored.keys() <= ledger.acked | ledger.in_doubt  # ...and nothing that was not posted
    for obs_id, (version, identifiers) in stored.items():
        assert (version, identifiers) == (1, [f"urn:uuid:{obs_id}"])
    with engine.connect() as conn:
        messages = conn.execute(text("SELECT id FROM inbound_message")).scalars().all()
        distinct = conn.execute(text(
            "SELECT count(*) FROM (SELECT DISTINCT subject, code, effective FROM resource "
            "WHERE res_type = 'Observation' AND code = :code) AS d"), {"code": HEART_RATE}
        ).scalar()
    assert ledger.acked_messages <= set(messages)
    assert distinct == len(stored)  # no reading stored under two ids
    # a POST cut off mid-body is stored whole or not at all: the readings in doubt come in tens
    assert len(stored.keys() - ledger.acked) % PER_BODY == 0
    assert_each_message_committed_once(engine, len(messages))
    engine.dispose()


@pytest.mark.parametrize("prepare_procs", ["0", "1"])  # the worker prepares, or a pool does
def test_kill_9_worker_mid_backlog_processes_each_message_once(
    db_url: str, tmp_path: Path, prepare_procs: str
) -> None:
    env = hub_env(db_url, HUB_WORKER_BATCH="4", HUB_WORKER_PREPARE_PROCS=prepare_procs,
                  HUB_WORKER_COMMIT_ROWS="200")
    key = hub_command(env, "keys", "create", "--name", "crash", "--source", "hub").strip()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    engine = create_engine(sa_url(db_url))
    per_body, bodies = 50, 120
    api = HubProcess(env, tmp_path / "api.log", "serve", "--host", "127.0.0.1", "--port",
                     str(port), "--no-migrate", "--no-worker")
    try:
        api.wait_http(base_url)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
            for n in range(bodies):
                answer = http.post("/ingest/hub", json=canonical(
                    per_body, device=f"backlog-dev-{n % 7}", patient=f"backlog-pat-{n % 7}",
                    start=n * per_body))
                assert answer.status_code == 202, answer.text
    finally:
        api.stop()
    assert inbox_statuses(engine) == {"received": bodies}

    first = HubProcess(env, tmp_path / "worker-1.log", "worker")
    try:
        deadline = time.monotonic() + 60
        while inbox_statuses(engine).get("processed", 0) < 8:
            assert first.alive(), first.output()
            assert time.monotonic() < deadline, first.output()
            time.sleep(0.005)
        preparing = children(first.proc.pid)
        assert bool(preparing) == (prepare_procs != "0")  # (with a pool: + its resource tracker)
        first.kill_9()
    finally:
        if first.alive():
            first.kill_9()
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in preparing):  # they end with it
        assert time.monotonic() < deadline, "a preparing process outlived its worker"
        time.sleep(0.1)
    at_kill = inbox_statuses(engine)
    assert 0 < at_kill.get("processed", 0) < bodies, at_kill  # killed in the middle
    assert at_kill.get("processed", 0) + at_kill.get("received", 0) == bodies

    second = HubProcess(env, tmp_path / "worker-2.log", "worker")
    try:
        wait_drained(engine, [second])
    finally:
        second.stop()
    assert second.processed_count() == at_kill["received"]  # the remainder, and only that
    assert_each_message_committed_once(engine, bodies)
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM resource WHERE res_type = "
                                  "'Observation' AND code = :code"), {"code": HEART_RATE}).scalar()
    assert count == per_body * bodies
    engine.dispose()
