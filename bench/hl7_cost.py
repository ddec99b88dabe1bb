"""The hub's own work per HL7v2 message, in process, for instruction counts.

    .venv/bin/python -m bench.hl7_cost listener 400     # door + dedupe + durable insert + ACK
    .venv/bin/python -m bench.hl7_cost prepare 400      # the worker's prepare
    .venv/bin/python -m bench.hl7_cost commit 400       # the worker's commit
    valgrind --tool=cachegrind --cache-sim=no python -m bench.hl7_cost listener 400

Everything a step needs is set up for ``--setup`` messages (default 800) whatever ``COUNT``
is, and only the measured step runs over ``COUNT`` of them, so the instructions of a run with
``COUNT`` = N less those of a run with ``COUNT`` = 0, divided by N, are the step's own
instructions per message (valgrind counts instructions whatever the machine's load; wall and
CPU time on a shared machine do not).

- **listener**: what ``hub mllp`` does per frame, without the event loop and sockets: the MLLP
  decoder's ``feed``, ``examine`` (tokenize, door checks, ACK), the group-commit write of
  batches of 8 (as 8 senders give: dedupe lookup, inbox insert, commit) and framing the ACK.
- **prepare** / **commit**: ``Pipeline.prepare`` under the registry epoch, and
  ``Pipeline.commit`` of ``--commit-messages`` a transaction (default: as many as
  ``hub worker`` claims, ``HUB_WORKER_BATCH``), as ``bench.phases --workload hl7`` runs them
  (the monitor's device tree registered by a first message, as in a running worker).

SQLite in a temporary directory; the FHIR written is checked (2 Observations a message).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.hl7_mllp import messages
from bench.ingest import REPO, SECRET, fresh_database
from bench.phases import HL7_CONTENT_TYPE, hl7_observations
from hub.channels.hl7_intake import SOURCE, _Item, _write, examine
from hub.hl7v2 import MllpDecoder, frame
from hub.identity import IdentityResolver
from hub.runtime import Hub
from hub.settings import Settings
from hub.store import inbox, registry
from hub.store.db import write_tx
from hub.telemetry import Telemetry
from hub.worker import tune_gc

BATCH = 8  # messages a group commit takes with 8 senders


def listener(hub: Hub, bodies: list[bytes], count: int) -> None:
    connector = hub.connectors.get(SOURCE)
    framed = [frame(b) for b in bodies]
    decoder = MllpDecoder()
    cut = bodies[:count]
    for start in range(0, len(cut), BATCH):
        items = []
        for data in framed[start:start + len(cut[start:start + BATCH])]:
            for payload in decoder.feed(data):
                door = examine(payload.payload, connector)  # type: ignore[union-attr]
                items.append(_Item(door, payload.payload, "mllp", None, None,  # type: ignore[union-attr]
                                   None))
        for stored in _write(hub.engine, items, 86400.0):
            frame(stored.reply)


def worker(hub: Hub, bodies: list[bytes], count: int, step: str, per_commit: int) -> None:
    for body in bodies:
        inbox.receive(hub.engine, source=SOURCE, channel="mllp", content_type=HL7_CONTENT_TYPE,
                      body=body)
    hub.pipeline.run_batch(hub.engine, 1)  # the monitor's device tree registered
    with hub.engine.connect() as conn:
        claimed = inbox.claim(conn, len(bodies), lock=False)
        conn.rollback()
    raws = {raw.id: raw for raw in claimed}
    with hub.engine.connect() as conn:
        epoch = registry.epoch(conn)
        todo = claimed[:count] if step == "prepare" else claimed
        prepared = [hub.pipeline.prepare(conn, raw, epoch) for raw in todo]
        conn.rollback()
    if step == "prepare":
        return
    for start in range(0, count, per_commit):
        resolver = IdentityResolver(hub.pipeline.identity_cache)
        with write_tx(hub.engine) as conn:
            hub.pipeline.commit(conn, prepared[start:min(start + per_commit, count)],
                                raws.__getitem__, resolver)
        resolver.committed()
    if hl7_observations(hub.engine) != 2 * (count + 1):
        raise SystemExit("not every message stored its 2 Observations")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["listener", "prepare", "commit"])
    parser.add_argument("count", type=int)
    parser.add_argument("--setup", type=int, default=800)
    parser.add_argument("--commit-messages", type=int, default=Settings().worker_batch)
    args = parser.parse_args()
    if args.count > args.setup:
        raise SystemExit("count > --setup")
    tune_gc()
    # The worker's first message registers the device tree (not measured).
    bodies = messages(args.setup + (args.step != "listener"))
    with tempfile.TemporaryDirectory(prefix="hub-hl7-cost-") as tmp, \
            fresh_database("sqlite", Path(tmp)) as url:
        settings = Settings(database_url=url, env="test", secret_key=SECRET,
                            mappings_dir=REPO / "mappings", inline_worker=False)
        hub = Hub.build(settings, Telemetry.disabled())
        cpu = time.process_time()
        if args.step == "listener":
            listener(hub, bodies, args.count)
        else:
            worker(hub, bodies, args.count, args.step, args.commit_messages)
        cpu = time.process_time() - cpu
        hub.engine.dispose()
    print(f"{args.step} {args.count}: {cpu * 1e6 / max(args.count, 1):.1f} us CPU a message "
          "(with set-up; use differences)")


if __name__ == "__main__":
    main()
