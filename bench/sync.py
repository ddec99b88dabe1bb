"""Sync throughput: outbox → loopback FHIR destination in Bundles, and a HealthLake-profile run.

    .venv/bin/python -m bench.sync                      # SQLite, 60,000 resources
    .venv/bin/python -m bench.sync --backends sqlite postgres --resources 100000

Per backend, a fresh database (a temporary SQLite file; ``CREATE DATABASE`` on the test
PostgreSQL server, dropped afterwards) is filled with Observations and their outbox rows exactly
as the pipeline writes them (untimed). The destination is the loopback FHIR server of the tests
(``tests/sync/fhir_server.py``) in its own process, over real HTTP. The clock runs from the
worker's start until every outbox row is ``delivered``; the server's counts are then checked
(one resource per identifier, none missing).

1. **FHIR Bundles**: batch Bundles of ``--bundle`` entries (PUT to the deterministic id),
   ``--concurrency`` lanes, no rate limit: resources delivered per second (target ≥ 5,000/s).
2. **HealthLake profile**: the loopback endpoint verifies every SigV4 signature (botocore, test
   credentials) and enforces a quota (``--quota`` entries/s, 500 entries per Bundle, a
   transaction costing twice); the hub runs the ``current`` tier's pacing (95 % of the quota).
   Reported: the share of the quota used while draining (target ≥ 90 %) and the 429s received
   (target: no storm — a handful at most). And the ``legacy`` tier: 160 entries per Bundle at
   10 Bundles/s.

Prints figures, and as the last line one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hub.store import delivery, outbox, resources
from hub.store.db import make_engine, upgrade, write_tx
from hub.sync.config import DestinationsFile, load_destinations
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker
from tests.sync.conftest import observation

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("HUB_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ACCESS, SECRET = "AKIDBENCHEXAMPLE", "bench-secret-not-real"


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            upgrade(url)
            yield url
        return
    name = f"hub_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def fhir_server() -> Iterator[str]:
    from tests.sync.fhir_server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.sync.fhir_server", "--port", str(port)],
                            cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{url}/_admin/stats", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def seed(engine: Engine, router: OutboxRouter, total: int, patients: int) -> None:
    """Untimed: Observations + outbox rows, interleaved across patients, 2,000 per transaction."""
    per = -(-total // patients)
    order = [(p, n) for n in range(per) for p in range(patients)][:total]
    for i in range(0, len(order), 2000):
        batch = [observation(p, n) for p, n in order[i:i + 2000]]
        with write_tx(engine) as conn:
            outbox.enqueue(conn, router.route(resources.upsert(conn, batch, "bench")))


def drain(engine: Engine, config: DestinationsFile, name: str, total: int
          ) -> tuple[float, SyncWorker]:
    worker = SyncWorker(engine, config, lease_secs=300, poll_secs=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, [name]), daemon=True)
    started = time.perf_counter()
    thread.start()
    while True:
        time.sleep(0.1)
        counts = delivery.counts(engine, name).get(name, {})
        if counts.get("delivered", 0) >= total:
            break
        if set(counts) - {"delivered", "pending", "inflight"}:
            raise SystemExit(f"unexpected outbox states: {counts}")
    took = time.perf_counter() - started
    stop.set()
    thread.join(30)
    return took, worker


def write_config(folder: Path, body: str) -> DestinationsFile:
    path = folder / "destinations.yaml"
    path.write_text(body)
    return load_destinations(path)


def stats(url: str) -> dict[str, Any]:
    out: dict[str, Any] = httpx.get(f"{url}/_admin/stats", timeout=60).json()
    return out


def run_fhir(backend: str, total: int, bundle: int, concurrency: int, patients: int
             ) -> dict[str, Any]:
    with database(backend) as url, fhir_server() as server, \
            tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), (
            f"destinations:\n  - name: bench\n    type: fhir\n    base_url: {server}/fhir\n"
            f"    write_mode: put\n    limits: {{bundle: batch, bundle_size: {bundle}, "
            f"concurrency: {concurrency}}}\n"))
        engine = make_engine(url, sqlite_synchronous="FULL")
        seed(engine, OutboxRouter.from_config(config), total, patients)
        took, _ = drain(engine, config, "bench", total)
        got = stats(server)
        engine.dispose()
    assert got["resources"] == total and not got["duplicates"], "lost or duplicated resources"
    rate = total / took
    print(f"[{backend}] FHIR batch Bundles of {bundle}, {concurrency} lanes: {total} resources "
          f"in {took:.2f} s = {rate:,.0f} resources/s ({got['counters']['requests']} requests)")
    return {"backend": backend, "resources": total, "seconds": round(took, 3),
            "resources_per_sec": round(rate), "bundle": bundle, "concurrency": concurrency}


def run_healthlake(backend: str, total: int, tier: str, quota: float) -> dict[str, Any]:
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = ACCESS, SECRET
    os.environ.pop("AWS_SESSION_TOKEN", None)
    if tier == "legacy":
        server_cfg = {"max_entries": 160, "unit": "requests", "rate": 10}
        limits = ""  # the tier's own: 160 entries, 10 Bundles/s
        capacity = "10 Bundles/s (1,600 resources/s)"
    else:
        server_cfg = {"max_entries": 500, "unit": "entries", "rate": quota}
        limits = f", entries_per_sec: {quota * 0.95}"  # the tier's pacing, scaled to --quota
        capacity = f"{quota:,.0f} entries/s"
    with database(backend) as url, fhir_server() as server, \
            tempfile.TemporaryDirectory() as folder:
        httpx.post(f"{server}/_admin/config", json={"healthlake": {
            "access_key": ACCESS, "secret_key": SECRET, "region": "us-east-1", **server_cfg}})
        config = write_config(Path(folder), (
            "destinations:\n  - name: lake\n    type: healthlake\n    region: us-east-1\n"
            "    datastore_id: 0123456789abcdef0123456789abcdef\n"
            f"    tier: {tier}\n    endpoint_url: {server}\n"
            f"    limits: {{bundle: batch, concurrency: 3{limits}}}\n"))
        engine = make_engine(url)
        seed(engine, OutboxRouter.from_config(config), total, 2000)
        took, worker = drain(engine, config, "lake", total)
        got = stats(server)
        engine.dispose()
    assert got["resources"] == total and not got["duplicates"], "lost or duplicated resources"
    counters = got["counters"]
    # Quota use between the first and the last accepted request (the first request's units
    # were taken at the start of that span, so they are not part of it).
    span = (counters["last_at_ms"] - counters["first_at_ms"]) / 1000
    rate = 10 if tier == "legacy" else quota
    used = (counters["units"] - counters["first_cost"]) / span / rate  # units after the first
    throttled = counters.get("throttled", 0)
    requests = counters["requests"]
    print(f"[{backend}] HealthLake {tier} ({capacity}): {total} resources in {took:.2f} s; "
          f"quota used {used:.1%} over {span:.1f} s; {throttled} ThrottlingExceptions in "
          f"{requests} requests; SigV4 verified on every request "
          f"({counters['sigv4_ok']} ok, {counters.get('sigv4_refused', 0)} refused); "
          f"pace factor at the end {worker.senders['lake'].pacer.factor:.2f}")
    return {"backend": backend, "tier": tier, "resources": total, "seconds": round(took, 3),
            "quota_used": round(used, 3), "throttled": throttled, "requests": requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["sqlite"],
                        choices=["sqlite", "postgres"])
    parser.add_argument("--resources", type=int, default=60_000)
    parser.add_argument("--bundle", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--patients", type=int, default=5_000)
    parser.add_argument("--quota", type=float, default=3000.0,
                        help="HealthLake current-tier entries/s the loopback enforces")
    parser.add_argument("--healthlake-resources", type=int, default=36_000)
    args = parser.parse_args()
    results: dict[str, Any] = {"fhir": [], "healthlake": []}
    for backend in args.backends:
        results["fhir"].append(run_fhir(backend, args.resources, args.bundle,
                                        args.concurrency, args.patients))
    for tier, total in (("current", args.healthlake_resources),
                        ("legacy", args.healthlake_resources // 2)):
        results["healthlake"].append(run_healthlake(args.backends[0], total, tier, args.quota))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
