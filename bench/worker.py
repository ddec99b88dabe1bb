"""Worker cost per reading, in process: fill the inbox, then time (or profile) draining it.

    .venv/bin/python -m bench.worker --backend sqlite --readings 50000
    .venv/bin/python -m bench.worker --backend postgres --profile 25

Isolates the worker from HTTP: the backlog is written with ``inbox.receive`` before the clock
starts, then ``hub.worker.drain`` processes it in this process. ``--profile N`` runs under
cProfile and prints the N most expensive functions (cumulative); profiling inflates the times,
so read its figures as shares, not speeds. CPU time (this process only: on PostgreSQL the
server's work is not in it) is steadier than wall time on a busy machine. Last line JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.ingest import REPO, SECRET, fresh_database, make_bodies, observation_count
from hub.prepare_pool import PreparePool
from hub.rules import NoRules
from hub.runtime import Hub, preparer
from hub.settings import Settings
from hub.store import inbox
from hub.telemetry import Telemetry
from hub.worker import drain, tune_gc


def children_cpu(pool: PreparePool | None) -> float:
    """CPU seconds the pool's processes used so far (from /proc: they are still running)."""
    if pool is None:
        return 0.0
    total = 0
    for pid in list(pool.executor._processes):  # a benchmark may peek
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500, help="readings per message")
    parser.add_argument("--worker-batch", type=int, default=None,
                        help="messages per worker transaction (default: the hub's)")
    parser.add_argument("--no-rules", action="store_true",
                        help="without the rules stage (to see what it costs)")
    parser.add_argument("--no-gc-tuning", action="store_true",
                        help="leave CPython's GC at its defaults (run_worker tunes it)")
    parser.add_argument("--prepare-procs", type=int, default=0,
                        help="processes preparing for this one to commit (hub worker's option)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile, and print the N top functions")
    args = parser.parse_args()

    bodies = make_bodies(args.readings, args.batch, 200)
    with tempfile.TemporaryDirectory(prefix="hub-bench-worker-") as tmp, \
            fresh_database(args.backend, Path(tmp)) as url:
        settings = Settings(database_url=url, env="test", secret_key=SECRET,
                            mappings_dir=REPO / "mappings", inline_worker=False)
        hub = Hub.build(settings, Telemetry.disabled())
        if args.no_rules:
            hub.pipeline.rules = NoRules()
        for body, _ in bodies:
            inbox.receive(hub.engine, source="hub", channel="http",
                          content_type="application/json", body=body)
        batch = args.worker_batch or settings.worker_batch
        pool = PreparePool(hub.pipeline, hub.engine, args.prepare_procs,
                           partial(preparer, settings),
                           rows_per_commit=settings.worker_commit_rows) \
            if args.prepare_procs else None
        if pool is not None:  # its processes start (import, build their hub) before the clock
            pool.start()
        if not args.no_gc_tuning:
            tune_gc()  # as hub.worker.run_worker does in `hub worker` and `hub serve`
        profiler = cProfile.Profile() if args.profile else None
        children_began = children_cpu(pool)
        began, cpu_began = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        processed = drain(hub.pipeline, hub.engine, batch, pool)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        children = children_cpu(pool) - children_began
        if pool is not None:
            pool.close()
        stored = observation_count(hub.engine)
        hub.engine.dispose()
    if stored != args.readings or processed != len(bodies):
        raise SystemExit(f"stored {stored}/{args.readings}, processed {processed}/{len(bodies)}")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    figures = {"backend": args.backend, "readings": args.readings, "worker_batch": batch,
               "seconds": round(seconds, 3), "readings_per_s": round(args.readings / seconds),
               "us_per_reading": round(seconds / args.readings * 1e6, 1),
               "cpu_us_per_reading": round(cpu / args.readings * 1e6, 1),
               "prepare_procs": args.prepare_procs,
               "children_cpu_us_per_reading": round(children / args.readings * 1e6, 1),
               "profiled": bool(profiler), "gc_tuned": not args.no_gc_tuning,
               "rules": not args.no_rules}
    print(f"{args.backend}: {figures['readings_per_s']} readings/s in the worker "
          f"({figures['us_per_reading']} µs per reading, {figures['cpu_us_per_reading']} µs of "
          f"this process's CPU{', profiled' if profiler else ''})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
