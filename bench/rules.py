"""Rules overhead per reading: the worker on one workload with rules off and on, same run.

    .venv/bin/python -m bench.rules                          # SQLite, 500 readings per message
    .venv/bin/python -m bench.rules --batch 1 --readings 4000   # webhook-sized messages
    .venv/bin/python -m bench.rules --backend postgres

Each round fills a fresh database's inbox with the same canonical bodies (bench.ingest's mix of
BP panels, SpO2 and heart rate, one device and patient per body, 200 patients in rotation),
then times ``hub.worker.drain`` with a pipeline whose ``rules`` is ``NoRules`` (off) or the
shipped program ``mappings/rules`` (on). Off and on alternate, and the order flips every round,
so drift on a busy machine hits both; the figures are medians over ``--rounds``, and the
overhead is also given per round (each "on" against the "off" next to it: the spread says how
much the shared machine moved the figure). The headline overhead is the median of those paired
rounds: on this VM single rounds stall now and then (one pair of 21 read +170 %, another
-69 %), which moves a ratio of two separate medians by ±10 points from run to run (3.3-23.2 %
for the same code on one evening) while the paired median stayed within 15.9-16.5 %. The
load average is recorded before and after. After each "on" round the scheduler runs once at
the readings' end (due time-based rules), reported apart: it is not on the ingest path.
Target (issue 6): on ≤ 1.2 x off. Last line JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.ingest import BASE_TIME, REPO, SECRET, fresh_database, make_bodies
from hub.pipeline import Pipeline
from hub.rules import NoRules
from hub.rules.engine import RulesEngine
from hub.runtime import Hub
from hub.settings import Settings
from hub.store import inbox
from hub.telemetry import Telemetry
from hub.worker import drain, tune_gc


@contextmanager
def filled_hub(backend: str, bodies: list[tuple[bytes, int]], rules_on: bool
               ) -> Iterator[tuple[Hub, Pipeline, RulesEngine | None]]:
    """A fresh hub whose inbox holds ``bodies``, and a pipeline with the shipped rules
    (``rules_on``) or ``NoRules``, the collector set as the worker sets it; disposed after."""
    with tempfile.TemporaryDirectory(prefix="hub-bench-rules-") as tmp, \
            fresh_database(backend, Path(tmp)) as url:
        settings = Settings(database_url=url, env="test", secret_key=SECRET,
                            mappings_dir=REPO / "mappings", inline_worker=False)
        hub = Hub.build(settings, Telemetry.disabled())
        engine = RulesEngine(REPO / "mappings" / "rules") if rules_on else None
        pipeline = Pipeline(connectors=hub.connectors, mappings=hub.mappings,
                            rules=engine if engine is not None else NoRules(),
                            router=hub.pipeline.router)
        for body, _ in bodies:
            inbox.receive(hub.engine, source="hub", channel="http",
                          content_type="application/json", body=body)
        # The collector as `hub worker` runs it (hub.worker.tune_gc: a larger young generation,
        # the start-up heap frozen), and this round's hub frozen too, as the worker's would be:
        # with CPython's defaults the rules' short-lived state dicts bought full collections
        # over the whole heap that the worker never pays.
        tune_gc()
        gc.freeze()
        try:
            yield hub, pipeline, engine
        finally:
            hub.engine.dispose()


def one_round(backend: str, bodies: list[tuple[bytes, int]], readings: int, rules_on: bool,
              worker_batch: int) -> dict[str, float]:
    with filled_hub(backend, bodies, rules_on) as (hub, pipeline, engine):
        began, cpu_began = time.perf_counter(), time.process_time()
        drain(pipeline, hub.engine, worker_batch)
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        tick = 0.0
        due = 0
        if engine is not None:
            end = BASE_TIME + timedelta(seconds=readings, days=1)
            tick_began = time.perf_counter()
            due = engine.tick(hub.engine, end.astimezone(UTC))
            tick = time.perf_counter() - tick_began
    return {"us": seconds / readings * 1e6, "cpu_us": cpu / readings * 1e6, "tick_s": tick,
            "due": due}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="readings per message")
    parser.add_argument("--worker-batch", type=int, default=64,
                        help="messages per worker transaction")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    load_before = os.getloadavg()

    bodies = make_bodies(args.readings, args.batch, 200)
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for index in range(args.rounds):
        for rules_on in ((False, True) if index % 2 == 0 else (True, False)):
            found = one_round(args.backend, bodies, args.readings, rules_on, args.worker_batch)
            results[rules_on].append(found)
            print(f"round {index + 1} rules {'on ' if rules_on else 'off'}: "
                  f"{found['us']:.1f} µs/reading ({found['cpu_us']:.1f} µs CPU)", flush=True)
    off = statistics.median(r["us"] for r in results[False])
    on = statistics.median(r["us"] for r in results[True])
    off_cpu = statistics.median(r["cpu_us"] for r in results[False])
    on_cpu = statistics.median(r["cpu_us"] for r in results[True])
    paired = sorted(100 * (on_r["cpu_us"] / off_r["cpu_us"] - 1)
                    for on_r, off_r in zip(results[True], results[False], strict=True))
    paired_wall = sorted(100 * (on_r["us"] / off_r["us"] - 1)
                         for on_r, off_r in zip(results[True], results[False], strict=True))
    tick = statistics.median(r["tick_s"] for r in results[True])
    due = int(statistics.median(r["due"] for r in results[True]))
    figures = {"backend": args.backend, "readings": args.readings,
               "readings_per_message": args.batch, "rounds": args.rounds,
               "off_us_per_reading": round(off, 1), "on_us_per_reading": round(on, 1),
               "overhead_pct": round(100 * (on / off - 1), 1),
               "off_cpu_us": round(off_cpu, 1), "on_cpu_us": round(on_cpu, 1),
               "cpu_overhead_pct": round(100 * (on_cpu / off_cpu - 1), 1),
               "cpu_overhead_paired_median_pct": round(statistics.median(paired), 1),
               "wall_overhead_paired_median_pct": round(statistics.median(paired_wall), 1),
               "cpu_overhead_per_round_pct": [round(x, 1) for x in paired],
               "wall_overhead_per_round_pct": [round(x, 1) for x in paired_wall],
               "tick_seconds": round(tick, 3), "tick_due_rules": due,
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()],
               "when": datetime.now(UTC).isoformat(timespec="seconds")}
    print(f"{args.backend}, {args.batch} reading(s) per message: overhead (CPU, median of "
          f"paired rounds) {figures['cpu_overhead_paired_median_pct']} % (per round "
          f"{paired[0]:.1f} to {paired[-1]:.1f} %; target <= 20 %); medians: rules off "
          f"{off:.1f} µs, on {on:.1f} µs per reading ({figures['overhead_pct']} %; CPU "
          f"{off_cpu:.1f} and {on_cpu:.1f} µs, {figures['cpu_overhead_pct']} %); "
          f"one scheduler pass after: {tick:.3f} s for {due} due (patient, rule) pairs; load "
          f"average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
