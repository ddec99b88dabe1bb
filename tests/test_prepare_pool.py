"""``hub worker --prepare-procs``: other processes prepare, this one commits, nothing twice."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import orjson
import pytest
from sqlalchemy import text

from hub.prepare_pool import PreparePool
from hub.runtime import Hub, preparer
from hub.store import inbox
from hub.worker import drain
from tests.conftest import make_settings
from tests.readings import canonical

pytestmark = pytest.mark.slow


@pytest.fixture
def pool(hub: Hub, db_url: str) -> Iterator[PreparePool]:
    made = PreparePool(hub.pipeline, hub.engine, 1, partial(preparer, make_settings(db_url)),
                       rows_per_commit=40)
    yield made
    made.close()


def post(hub: Hub, body: dict) -> str:
    return inbox.receive(hub.engine, source="hub", channel="http",
                         content_type="application/json", body=orjson.dumps(body)).message_id


def test_a_backlog_is_prepared_elsewhere_and_committed_once_in_order(
    hub: Hub, pool: PreparePool
) -> None:
    ids = [post(hub, canonical(10, device=f"pool-dev-{n % 3}", patient=f"pool-pat-{n % 3}",
                               start=10 * n)) for n in range(24)]
    unassigned = post(hub, canonical(2, device="pool-nobody", patient=None))  # lock path
    bad = post(hub, {"device": {"id": "pool-dev-0"},
                     "readings": [{"type": "no-such-type", "time": "2026-11-20T08:00:00Z"}]})
    assert drain(hub.pipeline, hub.engine, 10, pool) == 26
    statuses = {m: inbox.get(hub.engine, m)["status"] for m in [*ids, unassigned, bad]}
    assert {statuses[m] for m in ids} == {"processed"}
    assert (statuses[unassigned], statuses[bad]) == ("quarantined", "failed")
    with hub.engine.connect() as conn:
        attempts = conn.execute(text("SELECT min(attempts), max(attempts) "
                                     "FROM inbound_message")).one()
        readings, top = conn.execute(text(
            "SELECT count(*), max(version_id) FROM resource "
            "WHERE res_type = 'Observation' AND code = '8867-4'")).one()
        registry = conn.execute(text("SELECT count(*), max(version_id) FROM resource "
                                     "WHERE res_type IN ('Patient', 'Device')")).one()
    assert tuple(attempts) == (1, 1)
    assert (readings, top) == (240, 1)
    assert tuple(registry) == (6, 1)


def test_messages_another_worker_processed_meanwhile_are_not_committed_again(
    hub: Hub, pool: PreparePool
) -> None:
    ids = [post(hub, canonical(5, device="race-dev", start=5 * n)) for n in range(6)]
    pool.fill()  # handed out to the preparing process...
    assert pool.tasks
    assert drain(hub.pipeline, hub.engine, 10) == 6  # ...while this worker processes them all
    assert drain(hub.pipeline, hub.engine, 10, pool) == 0  # prepared, but not taken
    assert {inbox.get(hub.engine, m)["attempts"] for m in ids} == {1}
