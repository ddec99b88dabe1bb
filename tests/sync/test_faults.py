"""Fault injection between the hub and a real FHIR server: 429 + Retry-After, 503, slow answers,
per-entry failures, connection resets before and after the server applied a write, and an
outage (shortened to seconds). In the end every resource is delivered exactly once per
identifier, in order per patient, and the destination was never stormed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hub.runtime import Hub
from hub.store import delivery
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker
from tests.sync.conftest import (
    assert_order_per_patient,
    configure,
    fhir_dest,
    seed,
    server_stats,
    write_config,
)
from tests.sync.faultproxy import FaultProxy
from tests.sync.fhir_server import ServerThread


@pytest.mark.slow
@pytest.mark.parametrize("server_ids", [True, False], ids=["put", "conditional-create"])
def test_everything_arrives_once_in_order_through_faults_and_an_outage(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path, server_ids: bool) -> None:
    configure(fhir_server.url, update_create=server_ids, p429=0.2, p503=0.05, retry_after=1,
              slow_ms=60, entry_p500=0.02, seed=11)
    with FaultProxy(fhir_server.port, reset_before=0.03, reset_after=0.03) as proxy:
        config = write_config(tmp_path, fhir_dest(
            proxy.url, bundle_size=5, concurrency=3, patient_entries_per_bundle=1,
            circuit_failures=3, timeout_secs=5))
        made = seed(hub, OutboxRouter.from_config(config), patients=30, per_patient=15)
        worker = SyncWorker(hub.engine, config, lease_secs=30, poll_secs=0.05)
        stop = threading.Event()
        runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        runner.start()
        time.sleep(1.0)
        proxy.down = True  # the outage: connections refused...
        configure(fhir_server.url, outage_secs=3)  # ...then the server answers 503 for a while
        time.sleep(2.0)
        proxy.down = False
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            counts = delivery.counts(hub.engine, "ehr").get("ehr", {})
            if counts.get("delivered", 0) == len(made):
                break
            time.sleep(0.2)
        stop.set()
        runner.join(30)
        counts = delivery.counts(hub.engine, "ehr")["ehr"]
        assert counts == {"delivered": len(made)}, counts
        stats = server_stats(fhir_server.url)
        assert stats["resources"] == len(made)
        assert stats["duplicates"] == {}
        assert_order_per_patient(stats, made)
        # Every fault kind happened, and the hub coped with each.
        faults = stats["counters"]
        assert faults["faults_429"] and faults["faults_503"] and faults["entry_faults"]
        assert proxy.counts["reset_before"] and proxy.counts["reset_after"]
        assert proxy.counts["refused"] and faults["outage"]
        sender = worker.senders["ehr"]
        assert sender.breaker.opened >= 1 and sender.breaker.state == "closed"
        assert sender.pacer.throttled >= 1
        # Retry-After honoured: no request started inside a Retry-After window it had seen.
        assert faults.get("early_after_429", 0) == 0, stats["early"]
