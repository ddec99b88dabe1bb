"""Scale-out: two ``hub worker`` processes on one PostgreSQL share a backlog, none twice.

The backlog (400 messages) is written first and hidden (quarantined), both workers are started,
and only once both are polling is it released in one statement, so the two race for the same
rows from the first claim on. Proofs, from the database and the workers' own counts:

- every message processed, each committed exactly once (``attempts`` = 1: it is incremented in
  the transaction that stores the message's resources);
- the workers' counts add up to the backlog exactly (a message claimed by both would be counted
  twice) and each worker did some of it (the work was shared, not serialised on one);
- one Observation per reading, every resource at version 1.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import create_engine, text

from hub.store import inbox
from tests.conftest import _truncate
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
