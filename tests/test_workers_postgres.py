"""Scale-out on PostgreSQL: two workers share a backlog, none twice; aborted transactions retry.

The backlog (400 messages) is written first and hidden (quarantined), both workers are started,
and only once both are polling is it released in one statement, so the two race for the same
rows from the first claim on. Proofs, from the database and the workers' own counts:

- every message processed, each committed exactly once (``attempts`` = 1: it is incremented in
  the transaction that stores the message's resources);
- the workers' counts add up to the backlog exactly (a message claimed by both would be counted
  twice) and each worker did some of it (the work was shared, not serialised on one);
- one Observation per reading, every resource at version 1.

Workers that share rows (rule state, shared resources) can deadlock; PostgreSQL then aborts one
transaction. That is the database's doing, not the message's: the batch is rolled back and done
again, the message is never marked failed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from hub.runtime import Hub
from hub.store import inbox
from hub.telemetry import Telemetry
from hub.worker import drain, run_worker
from tests.conftest import _truncate, make_settings
from tests.hubproc import HubProcess, hub_env, inbox_statuses, wait_drained
from tests.readings import canonical

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MESSAGES = 400
PER_MESSAGE = 10


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    _truncate(engine)
    engine.dispose()
    return postgres_url


def test_two_workers_share_a_backlog_and_process_no_message_twice(
    pg_url: str, tmp_path: Path
) -> None:
    engine = create_engine(pg_url)
    for n in range(MESSAGES):
        body = orjson.dumps(canonical(PER_MESSAGE, device=f"share-dev-{n % 13}",
                                      patient=f"share-pat-{n % 13}", start=n * PER_MESSAGE))
        inbox.receive(engine, source="hub", channel="http", content_type="application/json",
                      body=body, status=inbox.STATUS_QUARANTINED)
    env = hub_env(pg_url, HUB_WORKER_BATCH="8")
    workers = [HubProcess(env, tmp_path / f"worker-{n}.log", "worker") for n in (1, 2)]
    try:
        for worker in workers:
            worker.wait_for_log("worker started")
        assert inbox.requeue(engine, status=inbox.STATUS_QUARANTINED) == MESSAGES
        wait_drained(engine, workers)
    finally:
        for worker in workers:
            worker.stop()

    counts = [worker.processed_count() for worker in workers]
    assert sum(counts) == MESSAGES, counts  # no message counted by both
    assert min(counts) > 0, counts  # both took part
    assert inbox_statuses(engine) == {"processed": MESSAGES}
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT min(attempts), max(attempts) "
                                     "FROM inbound_message")).one()
        observations, top_version = conn.execute(text(
            "SELECT count(*), max(version_id) FROM resource "
            "WHERE res_type = 'Observation' AND code = '8867-4'")).one()
        registry_versions = conn.execute(text(
            "SELECT max(version_id) FROM resource WHERE res_type IN ('Patient', 'Device')"
        )).scalar()
    assert tuple(attempts) == (1, 1)
    assert (observations, top_version, registry_versions) == (MESSAGES * PER_MESSAGE, 1, 1)
    engine.dispose()


def test_a_transaction_the_database_aborts_is_retried_not_blamed_on_the_message(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # This hub's connections give up waiting for a row lock after 200 ms: the same class of error
    # (OperationalError) a deadlock victim gets, but provoked deterministically.
    hub = Hub.build(make_settings(pg_url + "?options=-c%20lock_timeout%3D200"),
                    Telemetry.disabled())

    def post(n: int) -> str:
        return inbox.receive(hub.engine, source="hub", channel="http",
                             content_type="application/json",
                             body=orjson.dumps(canonical(n, device="lock-dev",
                                                         patient="lock-pat"))).message_id

    post(1)
    assert drain(hub.pipeline, hub.engine, 10) == 1
    second = post(2)  # its first reading is the Observation already stored
    blocker = create_engine(pg_url).connect()
    try:
        blocker.execute(text("SELECT 1 FROM resource WHERE res_type = 'Observation' FOR UPDATE"))
        with pytest.raises(OperationalError):
            hub.pipeline.run_batch(hub.engine, 10)
        held = inbox.get(hub.engine, second)
        assert held is not None and (held["status"], held["attempts"]) == ("received", 0)

        stop = threading.Event()
        caplog.set_level(logging.WARNING, logger="hub.worker")
        worker = threading.Thread(target=run_worker, args=(hub.pipeline, hub.engine, stop),
                                  kwargs={"batch": 10, "poll_secs": 0.05})
        worker.start()
        deadline = time.monotonic() + 30
        while not any("retrying" in r.getMessage() for r in caplog.records):
            assert worker.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        blocker.rollback()  # the lock goes: the retried batch gets through
        blocker.close()
    try:
        deadline = time.monotonic() + 30
        while (inbox.get(hub.engine, second) or {}).get("status") != "processed":
            assert worker.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=30)
    done = inbox.get(hub.engine, second)
    assert done is not None and done["attempts"] == 1
    with hub.engine.connect() as conn:
        dead = conn.execute(text("SELECT count(*) FROM dead_letter")).scalar()
        top = conn.execute(text("SELECT count(*), max(version_id) FROM resource "
                                "WHERE res_type = 'Observation' AND code = '8867-4'")).one()
    assert dead == 0
    assert tuple(top) == (2, 1)
    hub.engine.dispose()
