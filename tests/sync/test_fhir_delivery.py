"""Generic FHIR REST delivery to a real loopback FHIR server, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import orjson
from sqlalchemy import update

from hub.runtime import Hub
from hub.store import delivery
from hub.store.models import Resource
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker
from tests.sync.conftest import (
    assert_order_per_patient,
    configure,
    fhir_dest,
    outbox_rows,
    seed,
    server_stats,
    write_config,
)
from tests.sync.fhir_server import ServerThread


def test_batches_of_put_deliver_every_resource_once_in_order(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=25))
    made = seed(hub, OutboxRouter.from_config(config), patients=7, per_patient=15)
    worker = SyncWorker(hub.engine, config)
    assert worker.drain("ehr") == len(made)
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made) and stats["duplicates"] == {}
    assert set(stats["writes"].values()) == {1}  # PUT, each exactly once
    assert {r.status for r in outbox_rows(hub)} == {"delivered"}
    assert stats["counters"]["requests"] == -(-len(made) // 25)  # Bundles of 25
    assert_order_per_patient(stats, made)
    worker.close()


def test_conditional_create_is_chosen_without_update_create_and_never_duplicates(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    configure(fhir_server.url, update_create=False)
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=10))
    made = seed(hub, OutboxRouter.from_config(config), patients=3, per_patient=5)
    worker = SyncWorker(hub.engine, config)
    assert worker.senders["ehr"].write_mode("Observation") == "conditional"  # type: ignore[attr-defined]
    worker.drain("ehr")
    # Replay everything (a backfill): conditional create finds each one, creates nothing.
    since = delivery.utcnow().replace(year=2000)
    assert delivery.enqueue_since(hub.engine, "ehr", since) == len(made)
    worker.drain("ehr")
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made) and stats["duplicates"] == {}
    assert stats["counters"]["conditional_hit"] == len(made)
    worker.close()


def test_plain_create_searches_first_when_a_previous_attempt_may_have_landed(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    configure(fhir_server.url, update_create=False, conditional_create=False)
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=10))
    made = seed(hub, OutboxRouter.from_config(config), patients=2, per_patient=5)
    worker = SyncWorker(hub.engine, config, lease_secs=0.0)
    sender = worker.senders["ehr"]
    # The first attempt lands at the server but the worker "dies" before recording it.
    items = delivery.claim(hub.engine, "ehr", 100, lease_secs=0.0)
    sender.deliver(items)
    assert server_stats(fhir_server.url)["resources"] == len(made)
    worker.drain("ehr")  # lease expired: claimed again, in doubt → searched, not re-created
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made) and stats["duplicates"] == {}
    assert {r.status for r in outbox_rows(hub)} == {"delivered"}
    worker.close()


def test_batch_entries_reconciled_poison_dead_lettered_with_outcome_others_flow(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=50))
    router = OutboxRouter.from_config(config)
    good = seed(hub, router, patients=4, per_patient=5)
    poison = seed(hub, router, patients=1, per_patient=1, start=5, status="entered-in-error")
    more = seed(hub, router, patients=4, per_patient=1, start=6)  # patient 0's next reading
    worker = SyncWorker(hub.engine, config)
    worker.drain("ehr")
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(good) + len(more)
    dead = delivery.list_dead(hub.engine, destination="ehr")
    assert len(dead) == 1 and dead[0]["reason"].startswith("entry HTTP 422")
    shown = delivery.get_dead(hub.engine, dead[0]["id"])
    assert shown is not None and shown["detail"]["resourceType"] == "OperationOutcome"
    assert shown["item"]["resource"] == f"Observation/{poison[0]['id']}"
    # Replay after the data was fixed at the source delivers it.
    t = Resource.__table__  # type: ignore[attr-defined]
    fixed = dict(poison[0], status="final")
    with hub.engine.begin() as conn:
        conn.execute(update(t).where(t.c.res_id == poison[0]["id"])
                     .values(content=orjson.dumps(fixed).decode()))
    assert delivery.replay_dead(hub.engine, [dead[0]["id"]]) == 1
    worker.drain("ehr")
    assert delivery.list_dead(hub.engine, destination="ehr") == []
    assert {r.status for r in outbox_rows(hub)} == {"delivered"}
    worker.close()


def test_failed_transaction_is_split_and_the_valid_entries_retried(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=16,
                                              bundle="transaction"))
    router = OutboxRouter.from_config(config)
    good = seed(hub, router, patients=5, per_patient=3)
    seed(hub, router, patients=1, per_patient=1, start=3, status="entered-in-error")
    worker = SyncWorker(hub.engine, config)
    worker.drain("ehr")
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(good)
    assert stats["counters"]["transactions_refused"] >= 1
    statuses = [r.status for r in outbox_rows(hub)]
    assert statuses.count("dead") == 1 and statuses.count("delivered") == len(statuses) - 1
    worker.close()
