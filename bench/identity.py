"""What the registry-epoch check costs a worker batch (not a test; last line JSON).

    .venv/bin/python -m bench.identity [--backends sqlite postgres] [--transactions 2000]

Each worker batch reads the registry epoch once (on PostgreSQL ``FOR SHARE``) before it first
uses the identity cache. Measured here, per backend, in one run:

1. the baseline: a write transaction that writes one row (a batch always writes, so its commit
   flushes the log whether or not the check's share lock dirtied a page);
2. the same transaction with the epoch check first (``registry.epoch(share=True)``);
3. a real worker batch: one-reading canonical messages (the smallest messages, so the check is
   the largest share of a batch) drained by ``hub.worker.drain``, wall and CPU per batch.

The check's cost is the median of (2) - the median of (1), over ten interleaved rounds,
reported as a share of (3). CPU time is this process's (on PostgreSQL the server's work is not
in it); wall time moves with the load of the shared machine, so the load average is printed
with the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import Engine

from bench.ingest import REPO, SECRET, fresh_database, make_bodies
from hub.contracts import Identifier
from hub.runtime import Hub
from hub.settings import Settings
from hub.store import inbox, registry
from hub.store.db import write_tx
from hub.telemetry import Telemetry
from hub.worker import drain, tune_gc

_SERIALS = itertools.count()


def _transactions(engine: Engine, n: int, check: bool) -> tuple[float, float]:
    """Wall and CPU seconds per write transaction that writes one row (as every batch writes:
    its commit flushes the log either way) and, with ``check``, reads the epoch FOR SHARE."""
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        with write_tx(engine) as conn:
            if check:
                registry.epoch(conn, share=True)
            registry.bind(conn, "Device", Identifier("urn:bench", str(next(_SERIALS))), "bench")
    return (time.perf_counter() - began) / n, (time.process_time() - cpu) / n


def one_backend(backend: str, transactions: int, messages: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hub-bench-identity-") as tmp, \
            fresh_database(backend, Path(tmp)) as url:
        settings = Settings(database_url=url, env="test", secret_key=SECRET,
                            mappings_dir=REPO / "mappings", inline_worker=False)
        hub = Hub.build(settings, Telemetry.disabled())
        engine = hub.engine
        _transactions(engine, 100, True)  # warm the pool and the statement caches
        # Interleaved in rounds: the shared machine's load drifts within seconds.
        rounds = 10
        plain, checks = [], []
        for _ in range(rounds):
            plain.append(_transactions(engine, transactions // rounds, False))
            checks.append(_transactions(engine, transactions // rounds, True))
        base = (sorted(w for w, _ in plain)[rounds // 2], sorted(c for _, c in plain)[rounds // 2])
        checked = (sorted(w for w, _ in checks)[rounds // 2],
                   sorted(c for _, c in checks)[rounds // 2])
        for body, _ in make_bodies(messages, 1, 50):
            inbox.receive(engine, source="hub", channel="http", content_type="application/json",
                          body=body)
        tune_gc()
        batches = 0
        began, cpu = time.perf_counter(), time.process_time()
        while True:  # drain, counting batches
            done = hub.pipeline.run_batch(engine, settings.worker_batch)
            if done == 0:
                break
            batches += 1
        wall_batch = (time.perf_counter() - began) / batches
        cpu_batch = (time.process_time() - cpu) / batches
        assert drain(hub.pipeline, engine, settings.worker_batch) == 0
        engine.dispose()
    base_wall, base_cpu = base
    check_wall, check_cpu = checked[0] - base_wall, checked[1] - base_cpu
    return {
        "backend": backend,
        "write_tx_us": round(base_wall * 1e6, 1), "write_tx_cpu_us": round(base_cpu * 1e6, 1),
        "check_tx_us": round(checked[0] * 1e6, 1), "check_tx_cpu_us": round(checked[1] * 1e6, 1),
        "check_us": round(check_wall * 1e6, 1), "check_cpu_us": round(check_cpu * 1e6, 1),
        "batches": batches, "batch_us": round(wall_batch * 1e6),
        "batch_cpu_us": round(cpu_batch * 1e6),
        "check_share_of_batch_wall": round(check_wall / wall_batch, 5),
        "check_share_of_batch_cpu": round(check_cpu / cpu_batch, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgres"],
                        default=["sqlite", "postgres"])
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=3000,
                        help="one-reading messages drained to time a batch")
    args = parser.parse_args()
    results = []
    for backend in args.backends:
        load = os.getloadavg()[0]
        found = one_backend(backend, args.transactions, args.messages)
        found["load_average"] = round(load, 2)
        results.append(found)
        print(f"{backend} (load {load:.1f}): epoch check {found['check_us']} µs wall / "
              f"{found['check_cpu_us']} µs CPU per batch (one-row write tx {found['write_tx_us']} "
              f"µs); a batch of one-reading messages {found['batch_us']} µs wall / "
              f"{found['batch_cpu_us']} µs CPU → the check is "
              f"{found['check_share_of_batch_wall']:.2%} of its wall time, "
              f"{found['check_share_of_batch_cpu']:.2%} of its CPU")
    print(json.dumps({"identity_epoch_check": results}))


if __name__ == "__main__":
    main()
