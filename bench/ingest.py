"""Ingest throughput: canonical readings over HTTP until every one is stored as an Observation.

    .venv/bin/python -m bench.ingest            # `make bench`: SQLite, then PostgreSQL
    .venv/bin/python -m bench.ingest --backends sqlite --readings 50000 --topology inline

Per backend, a fresh database (a temporary SQLite file; ``CREATE DATABASE`` on the test
PostgreSQL server, dropped afterwards) and a real hub in subprocesses: ``hub serve --no-worker``
plus ``hub worker`` processes (``--topology split``, the default), or ``hub serve`` with its
inline worker. Measured on 2 cores: split beats inline (the API and the worker no longer share
one GIL); on PostgreSQL two workers beat one and three (a worker waits on the server about half
the time, so two overlap), on SQLite one (its writers take turns on one lock).
Several client threads post pre-built bodies of ``--batch`` readings each; the clock runs from
the first POST until no message waits any more (polled), and then the database must hold one
Observation per reading. Every body must be answered 202, and at the end every message must be
``processed``. The CPU time of each process role over the clocked run (from /proc) is printed
per reading: where the time goes.

Baseline, measured in the same run, single process: ``orjson.loads`` +
``fhir.resources.R4B.observation.Observation.model_validate`` of the Observations the hub makes
of the same readings (built up front by the pipeline's own ``convert``, as ``hub convert``
does), i.e. the bare cost of parsing and validating the output, no I/O at all. On a shared
machine the load changes from minute to minute, so the baseline runs right before and right
after each backend's phase, and each ratio divides by the mean of those two.

Prints figures per backend, the baselines, hub / baseline ratios, and as the last line one JSON
object with every figure (and the load average at the start and the end).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hub.contracts import RawMessage
from hub.identity import IdentityResolver
from hub.runtime import Hub
from hub.settings import Settings
from hub.store import api_keys
from hub.store.db import make_engine, upgrade, utcnow
from hub.telemetry import Telemetry

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("HUB_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret-not-for-production"
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- workload

def reading(index: int) -> dict[str, Any]:
    """One canonical reading; a realistic mix of simple, two-coding and panel Observations."""
    when = (BASE_TIME + timedelta(seconds=index)).isoformat()
    kind = index % 4
    if kind == 0:
        return {"type": "blood-pressure", "time": when, "unit": "mm[Hg]",
                "components": {"systolic": 110 + index % 40, "diastolic": 70 + index % 20}}
    if kind == 1:
        return {"type": "oxygen-saturation", "time": when, "unit": "%", "value": 90 + index % 10}
    return {"type": "heart-rate", "time": when, "unit": "/min", "value": 55 + index % 50}


def make_bodies(total: int, batch: int, devices: int) -> list[tuple[bytes, int]]:
    """``total`` distinct readings as canonical JSON bodies of ``batch`` readings each.

    Each body is one device's readings (as a device cloud batches them); devices rotate, and
    every reading has its own instant, so each one is a distinct Observation.
    """
    bodies: list[tuple[bytes, int]] = []
    for start in range(0, total, batch):
        n = min(batch, total - start)
        dev = (start // batch) % devices
        body = {"device": {"id": f"bench-device-{dev}"}, "patient": {"id": f"bench-pat-{dev}"},
                "readings": [reading(i) for i in range(start, start + n)]}
        bodies.append((orjson.dumps(body), n))
    return bodies


# ---------------------------------------------------------------- hub processes

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class HubProcesses:
    """A running hub: ``hub serve`` (+ ``hub worker``) subprocesses on one database."""

    base_url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def count(self, needle: str) -> int:
        """Lines with ``needle`` in every process's log (e.g. the workers' retries)."""
        return sum(p.read_text(errors="replace").count(needle) for p in self.logs)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                         for p in self.logs)


@contextmanager
def running_hub(db_url: str, topology: str, workdir: Path, batch: int | None, workers: int = 1,
                prepare_procs: int = 0) -> Iterator[HubProcesses]:
    port = free_port()
    env = {**os.environ, "HUB_DATABASE_URL": db_url, "HUB_SECRET_KEY": SECRET,
           "HUB_ENV": "test", "HUB_MAPPINGS_DIR": str(REPO / "mappings"),
           "OTEL_TRACES_EXPORTER": "none"}
    if batch:
        env["HUB_WORKER_BATCH"] = str(batch)
    commands = {"serve": [sys.executable, "-m", "hub", "serve", "--no-migrate",
                          "--port", str(port)]}
    if topology == "split":
        commands["serve"].append("--no-worker")
        for n in range(1, workers + 1):
            commands[f"worker-{n}"] = [sys.executable, "-m", "hub", "worker",
                                       "--prepare-procs", str(prepare_procs)]
    hub = HubProcesses(f"http://127.0.0.1:{port}")
    try:
        for name, argv in commands.items():
            log = workdir / f"{name}.log"
            hub.logs.append(log)
            with log.open("wb") as out:
                hub.procs.append(subprocess.Popen(argv, env=env, cwd=REPO, stdout=out,
                                                  stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while True:
            if any(p.poll() is not None for p in hub.procs):
                raise RuntimeError("hub exited at start:\n" + hub.tail())
            try:
                up = httpx.get(hub.base_url + "/health", timeout=1).status_code == 200
            except httpx.TransportError:
                up = False
            # the clock must not run while a worker process is still importing
            if up and all("worker started" in log.read_text() for log in hub.logs[1:]):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("hub did not answer /health:\n" + hub.tail())
            time.sleep(0.1)
        yield hub
    finally:
        for proc in hub.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in hub.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------- CPU per role

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15)


def _children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (a worker's preparing processes), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return found


def cpu_by_role(hub: HubProcesses) -> dict[str, float]:
    """CPU seconds so far of each role: ``api`` (hub serve), ``worker`` (the committing
    ``hub worker`` processes, or serve's inline worker inside ``api``), ``prepare`` (their
    preparing processes), ``bench`` (this process: the posting clients and the polling)."""
    roles = {"api": 0.0, "worker": 0.0, "prepare": 0.0,
             "bench": time.process_time()}
    for index, proc in enumerate(hub.procs):
        roles["api" if index == 0 else "worker"] += _cpu_of(proc.pid)
        roles["prepare"] += sum(_cpu_of(child) for child in _children_of(proc.pid))
    return roles


# ---------------------------------------------------------------- databases

@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """A new, migrated database URL; PostgreSQL's is dropped afterwards."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'hub.db'}"
        upgrade(url)
        yield url
        return
    name = f"hub_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# The LOINC codes of the workload's readings: the hub's rules also derive Observations of their
# own (days with data, summaries), which are not readings.
READING_CODES = "('85354-9', '2708-6', '8867-4')"


def observation_count(engine: Engine) -> int:
    """Observations of the workload's readings stored so far."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM resource WHERE res_type = 'Observation' "
            f"AND code IN {READING_CODES}")).scalar_one())


def messages_waiting(engine: Engine) -> int:
    """Messages not processed yet. A message's Observations commit in the transaction that
    marks it processed, so none waiting means every acknowledged reading is stored (counted
    once at the end). Polled instead of counting the Observations: that count read the
    growing resource index 50 times a second and cost this process 14.6 µs of CPU a reading,
    taken from the hub on a 2-core machine; this reads a few index entries."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM inbound_message WHERE status = 'received'")).scalar_one())


# ---------------------------------------------------------------- one backend

def post_all(base_url: str, key: str, bodies: list[tuple[bytes, int]], clients: int
             ) -> tuple[list[float], list[str]]:
    """Post every body from ``clients`` threads; returns per-POST latencies and failures."""
    work: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
    for item in bodies:
        work.put(item)
    for _ in range(clients):
        work.put(None)
    latencies: list[float] = []
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def client() -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
            while (item := work.get()) is not None:
                began = time.perf_counter()
                answer = http.post("/ingest/hub", content=item[0])
                latencies.append(time.perf_counter() - began)
                if answer.status_code != 202:
                    failures.append(f"{answer.status_code}: {answer.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures


def run_backend(backend: str, args: argparse.Namespace, bodies: list[tuple[bytes, int]]
                ) -> dict[str, Any]:
    """Figures for one backend."""
    total = sum(n for _, n in bodies)
    with tempfile.TemporaryDirectory(prefix=f"hub-bench-{backend}-") as tmp, \
            fresh_database(backend, Path(tmp)) as url:
        engine = make_engine(url)
        key = api_keys.create(engine, SECRET, "bench", ["hub"])
        workers = args.pg_workers if backend == "postgres" else 1
        procs = args.pg_prepare_procs if backend == "postgres" else args.prepare_procs
        with running_hub(url, args.topology, Path(tmp), args.worker_batch, workers,
                         procs) as hub:
            cpu_began = cpu_by_role(hub)
            began = time.perf_counter()
            latencies, failures = post_all(hub.base_url, key, bodies, args.clients)
            acked = time.perf_counter()
            if failures:
                raise RuntimeError(f"{len(failures)} POSTs failed, first: {failures[0]}")
            deadline = acked + args.timeout
            while (waiting := messages_waiting(engine)) > 0:
                if time.perf_counter() > deadline or any(p.poll() is not None for p in hub.procs):
                    raise RuntimeError(f"{waiting} messages still waiting:\n" + hub.tail())
                time.sleep(0.02)
            done = time.perf_counter()
            cpu_done = cpu_by_role(hub)
            stored = observation_count(engine)
            retries = hub.count("retrying")  # deadlock victims and the like, redone
        with engine.connect() as conn:
            statuses: dict[str, int] = dict(conn.execute(text(
                "SELECT status, count(*) FROM inbound_message GROUP BY status")).all())
        engine.dispose()
    if stored != total or statuses != {"processed": len(bodies)}:
        raise RuntimeError(f"{backend}: {stored} Observations for {total} readings; "
                           f"messages {statuses}")
    latencies.sort()
    figures = {
        "readings": total,
        "seconds": round(done - began, 3),
        "readings_per_s": round(total / (done - began)),
        "acked_readings_per_s": round(total / (acked - began)),
        "post_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "post_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "worker_retries": retries,
        # CPU µs per reading of each role over the clocked run (from /proc), and all of them
        # together: on 2 cores, readings/s can reach at most 2e6 / cpu_us_per_reading["total"]
        "cpu_us_per_reading": {role: round((cpu_done[role] - cpu_began[role]) / total * 1e6, 1)
                               for role in cpu_done},
    }
    figures["cpu_us_per_reading"]["total"] = round(sum(figures["cpu_us_per_reading"].values()), 1)
    return figures


# ---------------------------------------------------------------- baseline

def equivalent_observations(bodies: list[tuple[bytes, int]], limit: int) -> list[bytes]:
    """The Observations the hub makes of the first ``limit`` readings, as JSON: the pipeline's
    own ``convert`` against a scratch store, writing nothing (what ``hub convert`` does)."""
    with tempfile.TemporaryDirectory(prefix="hub-bench-baseline-") as tmp:
        url = f"sqlite:///{tmp}/scratch.db"
        upgrade(url)
        settings = Settings(database_url=url, env="test", secret_key=SECRET,
                            mappings_dir=REPO / "mappings", inline_worker=False,
                            sqlite_synchronous="NORMAL")
        hub = Hub.build(settings, Telemetry.disabled())
        resolver = IdentityResolver({})
        out: list[bytes] = []
        with hub.engine.connect() as conn:
            for body, _ in bodies:
                raw = RawMessage(str(uuid.uuid4()), "hub", "application/json", body, utcnow())
                out.extend(orjson.dumps(r) for r in hub.pipeline.convert(conn, raw, resolver)
                           .resources if r["resourceType"] == "Observation")
                if len(out) >= limit:
                    break
            conn.rollback()
        hub.engine.dispose()
    return out[:limit]


def baseline(contents: list[bytes]) -> dict[str, Any]:
    """Bare ``orjson.loads`` + R4B ``Observation.model_validate`` per stored Observation."""
    from fhir.resources.R4B.observation import Observation

    Observation.model_validate(orjson.loads(contents[0]))  # warm: first use builds validators
    began = time.perf_counter()
    for content in contents:
        Observation.model_validate(orjson.loads(content))
    seconds = time.perf_counter() - began
    return {"readings": len(contents), "seconds": round(seconds, 3),
            "readings_per_s": round(len(contents) / seconds),
            "us_per_reading": round(seconds / len(contents) * 1e6, 1)}


# ---------------------------------------------------------------- main

def mean_ratio(rate: float, before: dict[str, Any], after: dict[str, Any]) -> float:
    mean = (float(before["readings_per_s"]) + float(after["readings_per_s"])) / 2
    return round(rate / mean, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--readings", type=int, default=200_000, help="per backend")
    parser.add_argument("--batch", type=int, default=500, help="readings per POST")
    parser.add_argument("--clients", type=int, default=4, help="concurrent posting clients")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--topology", choices=["split", "inline"], default="split")
    parser.add_argument("--pg-workers", type=int, default=2,
                        help="hub worker processes on PostgreSQL (split topology; SQLite has "
                             "one: its writers take turns on one lock)")
    parser.add_argument("--prepare-procs", type=int, default=1,
                        help="SQLite: processes preparing for the worker (hub worker "
                             "--prepare-procs; split topology)")
    parser.add_argument("--pg-prepare-procs", type=int, default=0,
                        help="PostgreSQL: the same, per worker")
    parser.add_argument("--worker-batch", type=int, default=None,
                        help="HUB_WORKER_BATCH for the hub (default: the hub's own)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to drain")
    parser.add_argument("--baseline-readings", type=int, default=40_000,
                        help="Observations validated per baseline run")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    bodies = make_bodies(args.readings, args.batch, args.devices)
    print(f"workload: {args.readings} readings, {len(bodies)} POSTs of {args.batch}, "
          f"{args.clients} clients, topology {args.topology}, {os.cpu_count()} cores")
    result: dict[str, Any] = {"cores": os.cpu_count(), "readings": args.readings,
                              "batch": args.batch, "clients": args.clients,
                              "topology": args.topology, "pg_workers": args.pg_workers,
                              "prepare_procs": args.prepare_procs,
                              "pg_prepare_procs": args.pg_prepare_procs,
                              "load_average_start": round(os.getloadavg()[0], 2)}
    contents = equivalent_observations(bodies, args.baseline_readings)

    def measure_baseline() -> dict[str, Any]:
        base = baseline(contents)
        print(f" baseline: {base['readings_per_s']:>7} readings/s (orjson.loads + R4B "
              f"Observation.model_validate, {base['us_per_reading']} µs each, one process)")
        return base

    baselines = [measure_baseline()]
    for backend in backends:
        figures = run_backend(backend, args, bodies)
        print(f"{backend:>9}: {figures['readings_per_s']:>7} readings/s stored "
              f"({figures['seconds']} s; acknowledged at {figures['acked_readings_per_s']}/s; "
              f"POST p50 {figures['post_p50_ms']} ms, p99 {figures['post_p99_ms']} ms; "
              f"{figures['worker_retries']} batches retried)")
        print("           CPU µs per reading: " + ", ".join(
            f"{role} {us}" for role, us in figures["cpu_us_per_reading"].items()))
        baselines.append(measure_baseline())
        figures["ratio"] = mean_ratio(figures["readings_per_s"], baselines[-2], baselines[-1])
        result[backend] = figures
    result["baseline"] = baselines
    result["baseline_readings_per_s"] = round(
        sum(b["readings_per_s"] for b in baselines) / len(baselines))
    for backend in backends:
        result[f"ratio_{backend}"] = result[backend]["ratio"]
        print(f"    ratio: {backend} / baseline = {result[backend]['ratio']} (baselines before "
              "and after its phase)")
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
