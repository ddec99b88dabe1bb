"""CPU per reading of each pipeline phase, in process, best of several rounds.

    .venv/bin/python -m bench.phases                      # SQLite, both phases
    .venv/bin/python -m bench.phases --backend postgres --rounds 5 --profile prepare
    .venv/bin/python -m bench.phases --workload hl7       # PCD-01 ORUs, CPU per message

*prepare* times ``Pipeline.prepare`` of a backlog of canonical messages (decode, map, identity,
build, rows; reading the database only); *commit* times ``Pipeline.commit`` of the prepared
messages into a fresh database, in transactions of about ``--commit-rows`` rows as
``hub worker --prepare-procs`` commits them (the committing process's part; on PostgreSQL the
server's CPU is not in it). Each round starts afresh; the best round is the figure least
disturbed by other jobs on a shared machine (the median is printed too). ``--profile PHASE``
prints the top functions of that phase (cProfile inflates times: read shares, not speeds).

``--workload hl7``: the PCD-01 ORUs of ``bench.hl7_mllp`` (6 OBX: a device tree, a BP panel and
a heart rate each) as the MLLP listener stores them, committed ``--commit-messages`` at a time
(as many as ``hub worker`` claims: ``HUB_WORKER_BATCH``), after the first one is processed
(the monitor's device tree registered, as in a running worker); figures are CPU per message.
The messages the commit processed whole under the lock are counted, and prepare's reasons for
sending them there.
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
from collections import Counter
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from bench.hl7_mllp import messages as hl7_messages
from bench.ingest import REPO, SECRET, fresh_database, make_bodies, observation_count
from hub.contracts import RawMessage
from hub.identity import IdentityResolver
from hub.pipeline import Pipeline
from hub.runtime import Hub
from hub.settings import Settings
from hub.staging import Prepared
from hub.store import inbox, registry
from hub.store.db import write_tx
from hub.telemetry import Telemetry
from hub.worker import tune_gc

HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"


def hl7_observations(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM resource WHERE res_type = 'Observation'")).scalar_one())


def count_redone(pipeline: Pipeline) -> list[str]:
    """The ids of the messages the commit processes whole under the lock (prepare's fallbacks
    and those whose prepared identity turned out stale), as the commit calls them."""
    redone: list[str] = []
    under_lock = pipeline._under_lock

    def counted(conn: Connection, raw: RawMessage, resolver: IdentityResolver
                ) -> tuple[str, str]:
        redone.append(raw.id)
        return under_lock(conn, raw, resolver)

    pipeline._under_lock = counted  # type: ignore[method-assign]
    return redone


def one_round(args: argparse.Namespace, bodies: list[tuple[bytes, int]],
              profile: cProfile.Profile | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hub-bench-phases-") as tmp, \
            fresh_database(args.backend, Path(tmp)) as url:
        settings = Settings(database_url=url, env="test", secret_key=SECRET,
                            mappings_dir=REPO / "mappings", inline_worker=False)
        hub = Hub.build(settings, Telemetry.disabled())
        hl7 = args.workload == "hl7"
        for body, _ in bodies:
            inbox.receive(hub.engine, source="hl7v2" if hl7 else "hub",
                          channel="mllp" if hl7 else "http",
                          content_type=HL7_CONTENT_TYPE if hl7 else "application/json",
                          body=body)
        if hl7:  # a running worker has the monitor's device tree registered (and cached)
            hub.pipeline.run_batch(hub.engine, 1)
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
            # Under the registry epoch the commit will find, as a worker's batch and a
            # preparing process read it (else every message is redone under the lock).
            epoch = registry.epoch(conn)
            prepared = [hub.pipeline.prepare(conn, raw, epoch) for raw in claimed]
            conn.rollback()
        prepare_cpu = time.process_time() - cpu
        if profile is not None:
            profile.disable()
        batches: list[list[Prepared]] = [[]]
        for p in prepared:
            if (len(batches[-1]) >= args.commit_messages if args.commit_messages else
                    sum(len(q.staged.rows) for q in batches[-1]) >= args.commit_rows):
                batches.append([])
            batches[-1].append(p)
        if profile is not None and args.profile == "commit":
            profile.enable()
        redone = count_redone(hub.pipeline)
        cpu = time.process_time()
        for batch in batches:
            resolver = IdentityResolver(hub.pipeline.identity_cache)
            with write_tx(hub.engine) as conn:
                hub.pipeline.commit(conn, batch, raws.__getitem__, resolver)
            resolver.committed()
        commit_cpu = time.process_time() - cpu
        if profile is not None:
            profile.disable()
        stored = hl7_observations(hub.engine) if hl7 else observation_count(hub.engine)
        hub.engine.dispose()
    want = 2 * len(bodies) if hl7 else args.readings
    if stored != want:
        raise SystemExit(f"stored {stored}/{want}")
    per = len(claimed) if hl7 else args.readings
    args.fallbacks = dict(Counter(p.fallback for p in prepared if p.fallback))
    args.redone = len(redone)
    return {"prepare": prepare_cpu / per * 1e6, "commit": commit_cpu / per * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--readings", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=500, help="readings per message")
    parser.add_argument("--workload", choices=["hub", "hl7"], default="hub")
    parser.add_argument("--messages", type=int, default=4_000, help="hl7: ORUs")
    parser.add_argument("--commit-rows", type=int, default=10_000)
    parser.add_argument("--commit-messages", type=int, default=None,
                        help="messages per commit instead of --commit-rows (hl7: HUB_WORKER_BATCH)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=["prepare", "commit"], default=None)
    args = parser.parse_args()
    tune_gc()  # as the worker and its preparing processes do
    if args.commit_messages is None:
        args.commit_messages = Settings().worker_batch if args.workload == "hl7" else 0
    args.fallbacks = {}
    bodies = (make_bodies(args.readings, args.batch, 200) if args.workload == "hub"
              else [(m, 1) for m in hl7_messages(args.messages)])
    unit = "message" if args.workload == "hl7" else "reading"
    profile = cProfile.Profile() if args.profile else None
    rounds = [one_round(args, bodies, profile) for _ in range(args.rounds)]
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    figures: dict[str, object] = {"backend": args.backend, "workload": args.workload,
                                  "unit": unit,
                                  **({"messages": args.messages} if args.workload == "hl7"
                                     else {"readings": args.readings}),
                                  "commit_rows": args.commit_rows,
                                  "commit_messages": args.commit_messages,
                                  "fallbacks": args.fallbacks, "redone": args.redone,
                                  "rounds": args.rounds,
                                  "load_average": round(os.getloadavg()[0], 2)}
    for phase in ("prepare", "commit"):
        values = [r[phase] for r in rounds]
        figures[f"{phase}_cpu_us_best"] = round(min(values), 1)
        figures[f"{phase}_cpu_us_median"] = round(statistics.median(values), 1)
        print(f"{phase:>8}: {min(values):6.1f} µs CPU per {unit} (best of {args.rounds}; "
              f"median {statistics.median(values):.1f})")
    print(f"processed whole under the lock (last round): {args.redone} "
          f"(prepare's fallbacks: {args.fallbacks or 'none'})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
