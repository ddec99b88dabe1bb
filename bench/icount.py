"""Instructions per canonical reading of each SQLite pipeline phase, counted under valgrind.

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/tmp/x.cg.out \\
        .venv/bin/python -m bench.icount --upto commit --readings 4000

CPU time on a shared 2-core machine moves ±20 % with the load; instruction counts do not. This
script runs the phases of ``bench.phases`` once, up to ``--upto``: ``setup`` (a fresh SQLite
hub, the messages received, one message prepared to warm the caches), ``prepare`` (every
message prepared, as a preparing process does), ``handover`` (the results pickled and
unpickled, as they cross to the committer), ``commit`` (committed in transactions of about
``--commit-rows`` rows, as ``hub worker --prepare-procs`` does). A phase's instructions per
reading = (I refs up to it - I refs up to the one before) / readings, same ``--readings``.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

from bench.ingest import REPO, SECRET, fresh_database, make_bodies, observation_count
from hub.identity import IdentityResolver
from hub.runtime import Hub
from hub.settings import Settings
from hub.staging import Prepared
from hub.store import inbox, registry
from hub.store.db import write_tx
from hub.telemetry import Telemetry
from hub.worker import tune_gc

PHASES = ("setup", "prepare", "handover", "commit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upto", choices=PHASES, default="commit")
    parser.add_argument("--readings", type=int, default=4_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--commit-rows", type=int, default=10_000)
    args = parser.parse_args()
    upto = PHASES.index(args.upto)
    tune_gc()
    bodies = make_bodies(args.readings, args.batch, 200)
    with tempfile.TemporaryDirectory(prefix="hub-bench-icount-") as tmp, \
            fresh_database("sqlite", Path(tmp)) as url:
        settings = Settings(database_url=url, env="test", secret_key=SECRET,
                            mappings_dir=REPO / "mappings", inline_worker=False)
        hub = Hub.build(settings, Telemetry.disabled())
        for body, _ in bodies:
            inbox.receive(hub.engine, source="hub", channel="http",
                          content_type="application/json", body=body)
        with hub.engine.connect() as conn:
            claimed = inbox.claim(conn, len(bodies), lock=False)
            epoch = registry.epoch(conn)
            hub.pipeline.prepare(conn, claimed[0], epoch)  # caches warm, as in a worker
            conn.rollback()
        raws = {raw.id: raw for raw in claimed}
        if upto < 1:
            return
        with hub.engine.connect() as conn:
            prepared = [hub.pipeline.prepare(conn, raw, epoch) for raw in claimed]
            conn.rollback()
        if upto < 2:
            return
        prepared = pickle.loads(pickle.dumps(prepared))  # default protocol, as multiprocessing
        if upto < 3:
            return
        batches: list[list[Prepared]] = [[]]
        for p in prepared:
            if sum(len(q.staged.rows) for q in batches[-1]) >= args.commit_rows:
                batches.append([])
            batches[-1].append(p)
        for batch in batches:
            resolver = IdentityResolver(hub.pipeline.identity_cache)
            with write_tx(hub.engine) as conn:
                taken = inbox.take(conn, [p.message_id for p in batch])
                hub.pipeline.commit(conn, [p for p in batch if p.message_id in taken],
                                    raws.__getitem__, resolver)
            resolver.committed()
        stored = observation_count(hub.engine)
        if stored != args.readings:
            raise SystemExit(f"stored {stored}/{args.readings}")
        hub.engine.dispose()


if __name__ == "__main__":
    main()
