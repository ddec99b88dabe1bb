"""CPU per reading of each pipeline phase, in process, best of several rounds.

    .venv/bin/python -m bench.phases                      # SQLite, both phases
    .venv/bin/python -m bench.phases --backend postgres --rounds 5 --profile prepare

*prepare* times ``Pipeline.prepare`` of a backlog of canonical messages (decode, map, identity,
build, rows; reading the database only); *commit* times ``Pipeline.commit`` of the prepared
messages into a fresh database, in transactions of about ``--commit-rows`` rows as
``hub worker --prepare-procs`` commits them (the committing process's part; on PostgreSQL the
server's CPU is not in it). Each round starts afresh; the best round is the figure least
disturbed by other jobs on a shared machine (the median is printed too). ``--profile PHASE``
prints the top functions of that phase (cProfile inflates times: read shares, not speeds).
Last line JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from bench.ingest import REPO, SECRET, fresh_database, make_bodies, observation_count
from hub.identity import IdentityResolver
from hub.runtime import Hub
from hub.settings import Settings
from hub.staging import Prepared
from hub.store import inbox
from hub.store.db import write_tx
from hub.telemetry import Telemetry
from hub.worker import tune_gc


def one_round(args: argparse.Namespace, bodies: list[tuple[bytes, int]],
              profile: cProfile.Profile | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hub-bench-phases-") as tmp, \
            fresh_database(args.backend, Path(tmp)) as url:
        settings = Settings(database_url=url, env="test", secret_key=SECRET,
                            mappings_dir=REPO / "mappings", inline_worker=False)
        hub = Hub.build(settings, Telemetry.disabled())
        for body, _ in bodies:
            inbox.receive(hub.engine, source="hub", channel="http",
                          content_type="application/json", body=body)
        with hub.engine.connect() as conn:
            claimed = inbox.claim(conn, len(bodies), lock=False)
            conn.rollback()
        # The identities are read once, as a running worker has them cached.
        with hub.engine.connect() as conn:
            hub.pipeline.prepare(conn, claimed[0])
            conn.rollback()
        raws = {raw.id: raw for raw in claimed}
        if profile is not None and args.profile == "prepare":
            profile.enable()
        cpu = time.process_time()
        with hub.engine.connect() as conn:
            prepared = [hub.pipeline.prepare(conn, raw) for raw in claimed]
            conn.rollback()
        prepare_cpu = time.process_time() - cpu
        if profile is not None:
            profile.disable()
        batches: list[list[Prepared]] = [[]]
        for p in prepared:
            if sum(len(q.staged.rows) for q in batches[-1]) >= args.commit_rows:
                batches.append([])
            batches[-1].append(p)
        if profile is not None and args.profile == "commit":
            profile.enable()
        cpu = time.process_time()
        for batch in batches:
            resolver = IdentityResolver(hub.pipeline.identity_cache)
            with write_tx(hub.engine) as conn:
                hub.pipeline.commit(conn, batch, raws.__getitem__, resolver)
            resolver.committed()
        commit_cpu = time.process_time() - cpu
        if profile is not None:
            profile.disable()
        stored = observation_count(hub.engine)
        hub.engine.dispose()
    if stored != args.readings:
        raise SystemExit(f"stored {stored}/{args.readings}")
    return {"prepare": prepare_cpu / args.readings * 1e6,
            "commit": commit_cpu / args.readings * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--readings", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=500, help="readings per message")
    parser.add_argument("--commit-rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=["prepare", "commit"], default=None)
    args = parser.parse_args()
    tune_gc()  # as the worker and its preparing processes do
    bodies = make_bodies(args.readings, args.batch, 200)
    profile = cProfile.Profile() if args.profile else None
    rounds = [one_round(args, bodies, profile) for _ in range(args.rounds)]
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    figures: dict[str, object] = {"backend": args.backend, "readings": args.readings,
                                  "commit_rows": args.commit_rows, "rounds": args.rounds,
                                  "load_average": round(os.getloadavg()[0], 2)}
    for phase in ("prepare", "commit"):
        values = [r[phase] for r in rounds]
        figures[f"{phase}_cpu_us_best"] = round(min(values), 1)
        figures[f"{phase}_cpu_us_median"] = round(statistics.median(values), 1)
        print(f"{phase:>8}: {min(values):6.1f} µs CPU per reading (best of {args.rounds}; "
              f"median {statistics.median(values):.1f})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
