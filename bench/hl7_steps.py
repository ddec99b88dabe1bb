"""Where an HL7v2 message's CPU goes, step by step, without the database.

    .venv/bin/python -m bench.hl7_steps            # 2,000 messages, best of 5

The messages of ``bench.hl7_mllp`` (PCD-01 ORU, 6 OBX: an NIBP channel with systolic, diastolic
and mean, and a pulse rate; each message its own MSH-10 and time). Each step runs over all of
them and reports CPU time per message (``time.process_time``: on a shared machine wall time
measures the neighbours), best of 5:

- **door**: what the MLLP/HTTP intake does before storing: tokenize, check, build the ACK
  (``hub.channels.hl7_intake.examine``);
- **worker decode**: the connector's ``decode`` again in the worker (tokenize and door checks);
- **extract**: the HL7v2 mapping engine, message → readings and device tree;
- **build**: the two Observations (the BP panel, the pulse rate) from the readings
  (``hub.normalize.hl7v2_observation``), identity stubbed with fixed ids.

Baselines in the same run: hl7apy and python-hl7 parse only (``bench.hl7_parse``). The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from bench.hl7_mllp import REPO, messages
from bench.hl7_parse import hl7apy, pcd01_oru, python_hl7
from hub.channels.hl7_intake import examine
from hub.contracts import Extraction
from hub.fhir.ids import registry_id
from hub.mappings.live import LiveMappings
from hub.normalize.hl7v2_observation import build_detailed_observation
from hub.normalize.observation import Lineage
from hub.registry import ConnectorRegistry

COUNT = 2_000


def cpu_us(step: Callable[[], object], count: int, repeats: int = 5) -> float:
    """Best CPU time of ``repeats`` runs of ``step`` (which handles ``count`` messages), per
    message, in microseconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best * 1e6 / count


def main() -> None:
    payloads = messages(COUNT)
    mappings = LiveMappings(REPO / "mappings", ZoneInfo("UTC"))()
    connector = ConnectorRegistry.discover().get("hl7v2")
    documents = [connector.decode(p, "x-application/hl7-v2+er7") for p in payloads]
    extractions: list[Extraction] = [connector.extract(d, mappings) for d in documents]
    lineage = Lineage("00000000-0000-0000-0000-000000000000", "hl7v2")
    assert all(len(e.measurements) == 2 and not e.errors for e in extractions)

    def door() -> None:
        for p in payloads:
            examine(p, connector)

    def decode() -> None:
        for p in payloads:
            connector.decode(p, "x-application/hl7-v2+er7")

    def extract() -> None:
        for d in documents:
            connector.extract(d, mappings)

    def build() -> None:
        for e in extractions:
            for m in e.measurements:
                build_detailed_observation(m, mappings.types.get(m.type), patient_id="p",
                                           device_id=registry_id("Device", m.device),
                                           lineage=lineage)

    gc.freeze()  # as the worker does (hub.worker.tune_gc)
    steps = {"door": cpu_us(door, COUNT), "worker_decode": cpu_us(decode, COUNT),
             "extract": cpu_us(extract, COUNT), "build": cpu_us(build, COUNT)}
    data = pcd01_oru()
    baselines = {"hl7apy_parse": cpu_us(lambda: [hl7apy(data) for _ in range(20)], 20),
                 "python_hl7_parse": cpu_us(lambda: [python_hl7(data) for _ in range(500)], 500)}
    worker = steps["worker_decode"] + steps["extract"] + steps["build"]
    print(f"PCD-01 ORU, 6 OBX, {COUNT} messages; CPU per message, best of 5 "
          f"(load average {os.getloadavg()[0]:.1f})")
    for name, us in {**steps, "worker HL7 part (decode+extract+build)": worker,
                     **baselines}.items():
        print(f"  {name:42s} {us:9.1f} us  {1e6 / us:10,.0f} msg/s")
    print(json.dumps({**{f"{k}_us": round(v, 1) for k, v in {**steps, **baselines}.items()},
                      "worker_hl7_us": round(worker, 1),
                      "load_average": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
