"""Several sync processes share one destination's rate limits (``hub.store.heartbeats``).

Two SyncWorkers on one database stand for two ``hub sync`` processes; behaviour is asserted on
the share each paces at, and on the pacer's arithmetic with an injected clock (no timings).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from hub.runtime import Hub
from hub.store import heartbeats
from hub.store.db import utcnow
from hub.sync.policy import Pacer
from hub.sync.worker import SyncWorker
from tests.sync.conftest import fhir_dest, write_config
from tests.sync.fhir_server import ServerThread


def test_live_workers_split_the_rate_and_a_leaver_gives_its_share_back(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    config = write_config(tmp_path, fhir_dest(fhir_server.url, requests_per_sec=20))
    first, second = SyncWorker(hub.engine, config), SyncWorker(hub.engine, config)
    assert first.heartbeat(["ehr"]) == {"ehr": 1}
    assert first.senders["ehr"].pacer.share == 1.0
    assert second.heartbeat(["ehr"]) == {"ehr": 2}
    first.heartbeat(["ehr"])
    assert first.senders["ehr"].pacer.share == second.senders["ehr"].pacer.share == 0.5
    heartbeats.forget(hub.engine, first.worker_id)  # a clean stop
    second.heartbeat(["ehr"])
    assert second.senders["ehr"].pacer.share == 1.0
    first.close()
    second.close()


def test_a_killed_worker_stops_counting_after_the_ttl(hub: Hub) -> None:
    then = utcnow() - timedelta(seconds=30)
    heartbeats.beat(hub.engine, "killed", ["ehr", "lake"], ttl=6, now=then)
    assert heartbeats.beat(hub.engine, "alive", ["ehr"], ttl=60) == {"ehr": 2}
    assert heartbeats.beat(hub.engine, "alive", ["ehr"], ttl=6) == {"ehr": 1}
    # long gone (10 ttls): its rows are purged, not just ignored
    heartbeats.beat(hub.engine, "alive", ["ehr"], ttl=2)
    assert heartbeats.beat(hub.engine, "alive", ["ehr"], ttl=60) == {"ehr": 1}


def test_running_workers_beat_and_clean_up(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    config = write_config(tmp_path, fhir_dest(fhir_server.url, requests_per_sec=20))
    stop = threading.Event()
    workers = [SyncWorker(hub.engine, config, heartbeat_secs=0.05, poll_secs=0.05)
               for _ in range(2)]
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    try:
        seen = set()
        for _ in range(200):  # both beat within a few intervals
            seen = {w.senders["ehr"].pacer.share for w in workers}
            if seen == {0.5}:
                break
            stop.wait(0.05)
        assert seen == {0.5}
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert heartbeats.beat(hub.engine, "probe", ["ehr"], ttl=60) == {"ehr": 1}


@pytest.mark.parametrize("live", [1, 2, 4])
def test_a_share_slows_the_requests_bucket_in_proportion(live: int) -> None:
    clock = [0.0]
    pacer = Pacer(requests_per_sec=10, entries_per_sec=None, clock=lambda: clock[0],
                  sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    pacer.set_workers(live)
    for _ in range(21):  # a burst of 1, then 20 requests paced at 10/live per second
        pacer.wait(1)
    assert clock[0] == pytest.approx(2.0 * live)
