"""A patient merge made by one process reaches every other process's identity cache (the
registry epoch), on SQLite and PostgreSQL.

Each ``Hub`` here has its own pipeline and cache, as separate ``hub worker``/``hub serve``
processes do; the last test uses a real ``hub worker`` subprocess.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from hub.contracts import Identifier, PatientMerge
from hub.identity import IdentityResolver
from hub.runtime import Hub
from hub.store import inbox, registry
from hub.store.db import write_tx
from hub.store.models import Resource
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import make_settings
from tests.hl7v2_fhir.test_identity import OID_A, SYS_A, adt, oru
from tests.hubproc import HubProcess, hub_env, wait_drained

OLD, NEW = f"OLD-1^^^H&{OID_A}&ISO^MR", f"NEW-1^^^H&{OID_A}&ISO^MR"


@pytest.fixture
def other(db_url: str) -> Iterator[Hub]:
    """A second hub process's state on the same database."""
    built = Hub.build(make_settings(db_url), Telemetry.disabled())
    yield built
    built.engine.dispose()


def receive(hub: Hub, body: bytes) -> str:
    message_id = inbox.receive(hub.engine, source="hl7v2", channel="test",
                               content_type="x-application/hl7-v2+er7", body=body).message_id
    drain(hub.pipeline, hub.engine, 10)
    found = inbox.get(hub.engine, message_id)
    assert found is not None and found["status"] == "processed", found
    return message_id


def subjects(hub: Hub) -> set[str]:
    with hub.engine.connect() as conn:
        return {orjson.loads(c)["subject"]["reference"] for c in conn.execute(
            select(Resource.content).where(Resource.res_type == "Observation")).scalars()}


def bound(hub: Hub, value: str) -> str | None:
    with hub.engine.connect() as conn:
        return registry.lookup(conn, "Patient", Identifier(SYS_A, value))


def test_a_merge_in_one_process_reaches_the_others_cache(hub: Hub, other: Hub) -> None:
    receive(hub, oru("O1", OLD, 72))  # registers OLD-1 (prepared, registered by the commit)
    receive(hub, oru("O1b", OLD, 75, when="20240105093100+0000"))  # prepare reads, caches it
    merged = bound(hub, "OLD-1")
    assert hub.pipeline.staged_identities[("Patient", SYS_A, "OLD-1")] == merged
    receive(other, adt("A01", "A1", NEW))
    receive(other, adt("A40", "M1", NEW, extra=f"MRG|{OLD}"))
    survivor = bound(other, "NEW-1")
    assert bound(other, "OLD-1") == survivor != merged
    # The first hub's next batch sees the new epoch, drops its cache, and files a new reading
    # under the survivor (with the stale binding it went to the merged, inactive patient).
    receive(hub, oru("O2", OLD, 80, when="20240105094000+0000"))
    assert subjects(hub) == {f"Patient/{survivor}"}
    assert hub.pipeline.epoch == other.pipeline.epoch
    assert hub.pipeline.staged_identities[("Patient", SYS_A, "OLD-1")] == survivor


def test_a_merge_waits_for_a_batch_that_used_the_old_bindings(hub: Hub, other: Hub) -> None:
    """The batch holds the epoch (share lock on PostgreSQL, the write lock on SQLite) from its
    first cached lookup to its commit, so a merge in another process commits after it: nothing
    the batch filed under the old binding escapes the merge."""
    receive(hub, oru("O1", OLD, 72))
    receive(other, adt("A01", "A1", NEW))
    merged_at: list[float] = []

    def merge() -> None:
        receive(other, adt("A40", "M1", NEW, extra=f"MRG|{OLD}"))
        merged_at.append(time.monotonic())

    with write_tx(hub.engine) as conn:
        resolver = IdentityResolver(hub.pipeline.identity_cache)
        stale = resolver.patient_by_identifier(conn, Identifier(SYS_A, "OLD-1"))
        thread = threading.Thread(target=merge)
        thread.start()
        thread.join(3.0)  # long enough for the merge to finish, were it not waiting
        assert stale == bound(hub, "OLD-1")
        committed_at = time.monotonic()
    resolver.committed()
    thread.join(60)
    assert merged_at and merged_at[0] > committed_at
    assert bound(hub, "OLD-1") == bound(hub, "NEW-1")


@pytest.mark.slow
def test_a_hub_worker_process_follows_a_merge_made_elsewhere(
        db_url: str, hub: Hub, tmp_path: Path) -> None:
    worker = HubProcess(hub_env(db_url, HUB_WORKER_POLL_SECS="0.02"), tmp_path / "worker.log",
                        "worker")
    try:
        inbox.receive(hub.engine, source="hl7v2", channel="test",
                      content_type="x-application/hl7-v2+er7", body=oru("O1", OLD, 72))
        wait_drained(hub.engine, [worker])
        merged = bound(hub, "OLD-1")
        assert subjects(hub) == {f"Patient/{merged}"}  # the worker now caches OLD-1 → merged
        with write_tx(hub.engine) as conn:  # this process merges (the pipeline's own step)
            resolver = IdentityResolver({})
            resolver.apply_merges(conn, [PatientMerge(Identifier(SYS_A, "NEW-1"),
                                                      (Identifier(SYS_A, "OLD-1"),))], None)
        survivor = bound(hub, "NEW-1")
        assert survivor != merged
        inbox.receive(hub.engine, source="hl7v2", channel="test",
                      content_type="x-application/hl7-v2+er7",
                      body=oru("O2", OLD, 80, when="20240105094000+0000"))
        wait_drained(hub.engine, [worker])
        assert subjects(hub) == {f"Patient/{survivor}"}
    finally:
        worker.stop()
