"""kill -9 of the sync worker (a real ``hub sync`` process) and several workers on one outbox.

* killed right after the destination's 2xx and before the outbox update (the worker SIGKILLs
  itself at that point: ``HUB_SYNC_CRASH_AFTER``), and killed from outside at an arbitrary moment
  during sync: after a restart nothing is lost and nothing is duplicated at the destination;
* three worker processes on one database: every resource written exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub.runtime import Hub
from hub.store import delivery
from hub.sync.routing import OutboxRouter
from tests.conftest import REPO, TEST_SECRET
from tests.sync.conftest import (
    assert_order_per_patient,
    configure,
    fhir_dest,
    seed,
    server_stats,
    write_config,
)
from tests.sync.fhir_server import ServerThread

pytestmark = pytest.mark.slow


def start_sync(db_url: str, dest_file: Path, **env: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "HUB_SECRET_KEY": TEST_SECRET, "HUB_ENV": "test",
            "HUB_DATABASE_URL": db_url, "HUB_DESTINATIONS_FILE": str(dest_file),
            "HUB_SYNC_LEASE_SECS": "2", "HUB_SYNC_POLL_SECS": "0.05", **env}
    return subprocess.Popen([sys.executable, "-m", "hub", "sync"], cwd=REPO, env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_delivered(hub: Hub, total: int, timeout: float = 90) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = delivery.counts(hub.engine, "ehr").get("ehr", {})
        if counts.get("delivered", 0) == total:
            break
        time.sleep(0.1)
    return counts


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.mark.parametrize("update_create", [True, False], ids=["put", "conditional"])
def test_killed_between_the_destinations_2xx_and_the_outbox_update(
        hub: Hub, db_url: str, fhir_server: ServerThread, tmp_path: Path,
        update_create: bool) -> None:
    configure(fhir_server.url, update_create=update_create)
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=10, concurrency=1))
    made = seed(hub, OutboxRouter.from_config(config), patients=6, per_patient=10)
    crashing = start_sync(db_url, tmp_path / "destinations.yaml", HUB_SYNC_CRASH_AFTER="3")
    assert crashing.wait(60) == -signal.SIGKILL
    applied = server_stats(fhir_server.url)["resources"]
    recorded = delivery.counts(hub.engine, "ehr")["ehr"].get("delivered", 0)
    assert applied == 30 and recorded == 20  # the third Bundle landed but was never recorded
    worker = start_sync(db_url, tmp_path / "destinations.yaml")
    try:
        assert wait_delivered(hub, len(made)) == {"delivered": len(made)}
    finally:
        stop(worker)
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made) and stats["duplicates"] == {}
    if update_create:
        assert max(stats["writes"].values()) == 2  # the re-sent Bundle: one extra version
    else:
        assert stats["counters"]["conditional_hit"] == 10  # recognised, not created again
    assert_order_per_patient(stats, made)


def test_killed_from_outside_during_sync_plain_create_server(
        hub: Hub, db_url: str, fhir_server: ServerThread, tmp_path: Path) -> None:
    # The hardest server: no client ids, no conditional create (Epic-like). An item that may
    # have landed is searched by identifier before it is created again.
    configure(fhir_server.url, update_create=False, conditional_create=False, slow_ms=150)
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=5, concurrency=2))
    made = seed(hub, OutboxRouter.from_config(config), patients=8, per_patient=10)
    for _ in range(3):  # three kills at whatever moment the sync happens to be in
        worker = start_sync(db_url, tmp_path / "destinations.yaml")
        time.sleep(1.5)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(30) == -signal.SIGKILL
    worker = start_sync(db_url, tmp_path / "destinations.yaml")
    try:
        assert wait_delivered(hub, len(made)) == {"delivered": len(made)}
    finally:
        stop(worker)
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made) and stats["duplicates"] == {}


def test_three_workers_share_the_outbox_without_double_delivery(
        hub: Hub, db_url: str, fhir_server: ServerThread, tmp_path: Path) -> None:
    configure(fhir_server.url, slow_ms=20)
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=10, concurrency=2))
    made = seed(hub, OutboxRouter.from_config(config), patients=25, per_patient=16)
    workers = [start_sync(db_url, tmp_path / "destinations.yaml",
                          HUB_SYNC_LEASE_SECS="300") for _ in range(3)]
    try:
        assert wait_delivered(hub, len(made)) == {"delivered": len(made)}
    finally:
        for w in workers:
            stop(w)
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made)
    assert set(stats["writes"].values()) == {1}  # no resource was sent twice
    assert_order_per_patient(stats, made)
