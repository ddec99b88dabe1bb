"""Mapping throughput per built-in device mapping, against bare jmespath on the same payloads.

    .venv/bin/python -m bench.mappings [--seconds 0.2] [--rounds 5]

Payloads: every golden-test input of each mapping (``mappings/devices/*.test.yaml``, wrapped in
its case's account envelope), so each mapping runs over the vendor payloads it is tested with,
refused items included. Three loops over the same payloads, CPU time (``time.process_time``):

- **hub**: ``CompiledDeviceMapping.extract`` - the mapping language as the worker runs it (the
  hub's compiled expressions, time parsing, type/unit maps, refusals, Measurement objects);
- **hub + FHIR**: the same plus stage 2, ``build_observation`` per reading (catalogue codes,
  unit conversion, plausibility): the whole mapping cost of a reading;
- **jmespath** (the baseline): bare ``jmespath`` - ``jmespath.compile(expr).search(scope,
  options)`` with the hub's two arithmetic functions - evaluating the same expressions in the
  same order on the same scopes, skipping what the hub skips (``match``, ``type_map``), and
  nothing else (no time parsing, no objects).

The loops alternate within each round (drift on a busy machine hits all three); the figure per
loop is the best round. Cost ratio = hub CPU per payload set / jmespath CPU per payload set;
target (issue 3): hub ≤ 2 x the baseline. The last line is JSON, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jmespath
import orjson
from jmespath.visitor import Options

from hub.contracts import Extraction
from hub.errors import DataError
from hub.mappings.catalogue import MappingSet, load_mapping_set
from hub.mappings.extract import CompiledDeviceMapping
from hub.mappings.functions import _HubFunctions
from hub.mappings.golden import GoldenFile, golden_files
from hub.mappings.schema import MeasurementRule
from hub.mappings.yamlfile import load_model
from hub.normalize.observation import Lineage, build_observation

REPO = Path(__file__).resolve().parent.parent
OPTIONS = Options(custom_functions=_HubFunctions())
TARGET = 2.0


def payloads_by_mapping(root: Path) -> dict[str, list[Any]]:
    """Each mapping's golden-test payloads, decoded (and enveloped) as the connector hands them."""
    found: dict[str, list[Any]] = {}
    for test_file in golden_files(root / "devices"):
        golden = load_model(test_file, GoldenFile)
        for case in golden.cases:
            body = (test_file.parent / case.input).read_bytes().removeprefix(b"\xef\xbb\xbf")
            document = orjson.loads(body)
            if case.envelope is not None:
                document = {**case.envelope, "response": document}
            found.setdefault(golden.mapping, []).append(document)
    return found


class BareRule:
    """One measurement rule's expressions compiled by jmespath, evaluated as the hub does."""

    def __init__(self, rule: MeasurementRule) -> None:
        def c(expr: str | None) -> Any:
            return None if expr is None else jmespath.compile(expr)

        steps = [] if rule.each is None else [rule.each] if isinstance(rule.each, str) \
            else rule.each
        self.each = [jmespath.compile(e) for e in steps]
        self.match = c(rule.match)
        self.refusals = [jmespath.compile(r.when) for r in rule.refuse]
        self.type = jmespath.compile(rule.type)
        self.type_map = rule.type_map
        self.rest = [x for x in (c(rule.time), c(rule.time_zone), c(rule.unit),
                                 c(rule.correlation_id), c(rule.device.system),
                                 c(rule.device.value)) if x is not None]
        if rule.patient is not None:
            self.rest += [c(rule.patient.system), c(rule.patient.value)]
        self.values = [jmespath.compile(rule.values)] if isinstance(rule.values, str) \
            else [jmespath.compile(v) for v in rule.values.values()]

    def items(self, document: Any) -> list[dict[str, Any]]:
        level: list[tuple[Any, Any]] = [(document, None)]
        for step in self.each:
            nxt = []
            for node, _ in level:
                found = step.search(node, options=OPTIONS)
                if found is not None:
                    nxt.extend((child, node) for child in
                               (found if isinstance(found, list) else [found]))
            level = nxt
        nested = len(self.each) > 1
        return [{"item": item, "root": document, **({"parent": parent} if nested else {})}
                for item, parent in level]

    def run(self, document: Any) -> int:
        """Evaluate every expression the hub evaluates; the number of readings."""
        readings = 0
        for scope in self.items(document):
            if self.match is not None and not self.match.search(scope, options=OPTIONS):
                continue
            if any(r.search(scope, options=OPTIONS) for r in self.refusals):
                continue
            mtype = self.type.search(scope, options=OPTIONS)
            if self.type_map is not None and self.type_map.get(str(mtype)) is None:
                continue
            for expr in self.rest:
                expr.search(scope, options=OPTIONS)
            for expr in self.values:
                expr.search(scope, options=OPTIONS)
            readings += 1
        return readings


class BareMapping:
    def __init__(self, compiled: CompiledDeviceMapping) -> None:
        mapping = compiled.mapping
        self.refusals = [(jmespath.compile(r.when), BareRule(MeasurementRule(
            each=r.each, type="'x'", time="'x'", device={"system": "'x'", "value": "'x'"},
            values={"v": "'x'"})) if r.each else None) for r in mapping.refuse]
        self.rules = [BareRule(r) for r in mapping.measurements]

    def run(self, document: Any) -> int:
        for when, walker in self.refusals:
            if walker is None:
                if when.search(document, options=OPTIONS):
                    return 0
                continue
            for scope in walker.items(document):
                when.search(scope, options=OPTIONS)
        return sum(rule.run(document) for rule in self.rules)


def hub_extract(compiled: CompiledDeviceMapping, document: Any) -> Extraction | None:
    try:
        return compiled.extract(document)
    except DataError:
        return None  # a refused payload: its refusal was the work


def hub_with_fhir(mapping_set: MappingSet, compiled: CompiledDeviceMapping,
                  document: Any) -> int:
    found = hub_extract(compiled, document)
    if found is None:
        return 0
    built = 0
    lineage = Lineage("bench", compiled.mapping.name)
    for m in found.measurements:
        spec = mapping_set.types.get(m.type)
        if spec is None:
            continue
        try:
            build_observation(m, spec, patient_id="bench-patient", device_id="bench-device",
                              lineage=lineage)
        except DataError:
            continue
        built += 1
    return built


def cpu_per_pass(run: Callable[[], object], seconds: float) -> float:
    """CPU seconds per call of ``run``, over as many calls as fill ``seconds``."""
    calls, began = 0, time.process_time()
    while True:
        run()
        calls += 1
        spent = time.process_time() - began
        if spent >= seconds:
            return spent / calls


def measure(name: str, mapping_set: MappingSet, documents: list[Any], seconds: float,
            rounds: int) -> dict[str, Any]:
    compiled = mapping_set.devices[name]
    bare = BareMapping(compiled)
    readings = sum(len(e.measurements) for e in (hub_extract(compiled, d) for d in documents)
                   if e is not None)
    bare_readings = sum(bare.run(d) for d in documents)

    def hub() -> None:
        for d in documents:
            hub_extract(compiled, d)

    def full() -> None:
        for d in documents:
            hub_with_fhir(mapping_set, compiled, d)

    def baseline() -> None:
        for d in documents:
            bare.run(d)

    best = {"hub": float("inf"), "full": float("inf"), "jmespath": float("inf")}
    loops = {"hub": hub, "full": full, "jmespath": baseline}
    for r in range(rounds):
        order = list(loops) if r % 2 == 0 else list(reversed(loops))
        for key in order:
            best[key] = min(best[key], cpu_per_pass(loops[key], seconds))
    per = max(readings, 1)
    return {
        "payloads": len(documents), "readings": readings, "baseline_readings": bare_readings,
        "hub_us_per_reading": round(best["hub"] / per * 1e6, 2),
        "hub_fhir_us_per_reading": round(best["full"] / per * 1e6, 2),
        "jmespath_us_per_reading": round(best["jmespath"] / per * 1e6, 2),
        "hub_readings_per_s": round(per / best["hub"]),
        "hub_fhir_readings_per_s": round(per / best["full"]),
        "jmespath_readings_per_s": round(per / best["jmespath"]),
        "ratio": round(best["hub"] / best["jmespath"], 2),
        "ratio_with_fhir": round(best["full"] / best["jmespath"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="CPU seconds per loop")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = REPO / "mappings"
    mapping_set = load_mapping_set(root)
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    print(f"{'mapping':<12} {'payloads':>8} {'readings':>8} {'hub/s':>9} {'hub+FHIR/s':>10} "
          f"{'jmespath/s':>10} {'ratio':>6} {'+FHIR':>6}")
    for name, documents in sorted(payloads_by_mapping(root).items()):
        found = measure(name, mapping_set, documents, args.seconds, args.rounds)
        results[name] = found
        print(f"{name:<12} {found['payloads']:>8} {found['readings']:>8} "
              f"{found['hub_readings_per_s']:>9,} {found['hub_fhir_readings_per_s']:>10,} "
              f"{found['jmespath_readings_per_s']:>10,} {found['ratio']:>6} "
              f"{found['ratio_with_fhir']:>6}")
    worst = max(r["ratio"] for r in results.values())
    summary = {"bench": "mappings", "target_ratio": TARGET, "worst_ratio": worst,
               "worst_ratio_with_fhir": max(r["ratio_with_fhir"] for r in results.values()),
               "target_met": worst <= TARGET,
               "load_average_start": [round(x, 2) for x in load_start],
               "load_average_end": [round(x, 2) for x in os.getloadavg()],
               "mappings": results}
    print(f"worst ratio {worst} (target ≤ {TARGET}); load average "
          f"{summary['load_average_start'][0]} → {summary['load_average_end'][0]}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
