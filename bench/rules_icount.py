"""Instructions per reading of the worker's drain with the rules off or on, under valgrind.

    PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/tmp/x.cg.out .venv/bin/python -m bench.rules_icount --rules on

The set-up is ``bench.rules.filled_hub``, as in each round of ``bench.rules`` (a fresh SQLite
hub, the bodies received into its inbox, the pipeline with ``NoRules`` or the shipped program,
the collector tuned and the heap frozen), then the inbox is drained, unless ``--no-drain``.
Instructions a reading of the drain = (I refs - I refs with ``--no-drain``) / ``--readings``,
same other options. ``--dump DIR`` writes the rules' stored outputs and state rows after the
drain (a replay comparison of two versions of the code: ``diff -r``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import text

from bench.ingest import make_bodies, observation_count
from bench.rules import filled_hub
from hub.worker import drain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", choices=["on", "off"], default="on")
    parser.add_argument("--readings", type=int, default=4_000)
    parser.add_argument("--batch", type=int, default=500, help="readings per message")
    parser.add_argument("--worker-batch", type=int, default=64,
                        help="messages per worker transaction")
    parser.add_argument("--no-drain", action="store_true")
    parser.add_argument("--dump", type=Path, help="write rule outputs and states here")
    args = parser.parse_args()
    bodies = make_bodies(args.readings, args.batch, 200)
    with filled_hub("sqlite", bodies, args.rules == "on") as (hub, pipeline, _):
        if args.no_drain:
            return
        drain(pipeline, hub.engine, args.worker_batch)
        stored = observation_count(hub.engine)
        if stored < args.readings:
            raise SystemExit(f"stored {stored}/{args.readings}")
        if args.dump is not None:
            dump(hub.engine, args.dump)


def dump(engine: object, folder: Path) -> None:
    """What the rules decide, one file each: every stored resource (type, id, version, hash of
    the content without meta), the rule state rows and the schedule; nothing written at the
    wall clock's time."""
    folder.mkdir(parents=True, exist_ok=True)
    queries = {
        "resource": "SELECT res_type, res_id, version_id, content_hash FROM resource "
                    "ORDER BY 1, 2",
        "rule_patient_state": "SELECT patient_id, states FROM rule_patient_state ORDER BY 1",
        "rule_schedule": "SELECT patient_id, rule_id, due_at FROM rule_schedule ORDER BY 1, 2",
    }
    with engine.connect() as conn:  # type: ignore[attr-defined]
        for name, query in queries.items():
            rows = conn.execute(text(query)).fetchall()
            (folder / f"{name}.txt").write_text("".join(f"{tuple(r)!r}\n" for r in rows))

if __name__ == "__main__":
    main()
