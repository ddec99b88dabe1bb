"""CGM consensus metrics equal an independent computation, coded as the HL7 CGM IG does.

The independent side recomputes from the raw readings with the statistics module and explicit
range tests (Battelino et al., Diabetes Care 2019: < 54, 54-69, 70-180, 181-250, > 250 mg/dL;
GMI = 3.31 + 0.02392 x mean (Bergenstal 2018); CV = SD / mean), none of the engine's code.
"""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

from .conftest import of, validate

START = datetime(2026, 11, 1, tzinfo=UTC)
MOLAR = 18.0156  # mg/dL per mmol/L (glucose 180.156 g/mol)
LOINC = "http://loinc.org"


def synthetic_readings(seed: int) -> tuple[list[dict[str, Any]], list[float]]:
    """15 days of 5-minute CGM readings with a gap, duplicates, molar readings and hypos;
    returns (canonical readings, the mg/dL values that fall in the 14 summarised days)."""
    rng = random.Random(seed)
    readings: list[dict[str, Any]] = []
    counted: list[float] = []
    for i in range(15 * 288):
        when = START + timedelta(minutes=5 * i)
        if 3 * 288 <= i < 3 * 288 + 70 or rng.random() < 0.05:
            continue  # a sensor change (almost 6 h) and scattered drop-outs
        mg = max(40.0, min(400.0, 150 + 60 * rng.gauss(0, 1)))
        if rng.random() < 0.03:
            mg = rng.choice([45.0, 50.0, 52.0, 55.0, 60.0])  # lows, some below 54
        mg = round(mg)
        if i % 7 == 0:  # a molar reading from a mmol/L receiver
            mmol = round(mg / MOLAR, 1)
            readings.append({"type": "cgm-glucose-molar", "time": when.isoformat(),
                             "value": mmol, "unit": "mmol/L"})
            value = mmol * MOLAR
        else:
            readings.append({"type": "cgm-glucose", "time": when.isoformat(), "value": mg,
                             "unit": "mg/dL"})
            value = float(mg)
        if i % 50 == 0:
            readings.append(dict(readings[-1]))  # the same reading again (a replay)
        if i < 14 * 288:
            counted.append(value)
    return readings, counted


def independent(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.pstdev(values)
    return {
        "mean": mean, "gmi": 3.31 + 0.02392 * mean, "cv": 100 * sd / mean,
        "tbr_very_low": 100 * sum(v < 54 for v in values) / n,
        "tbr_low": 100 * sum(54 <= v < 70 for v in values) / n,
        "tir": 100 * sum(70 <= v <= 180 for v in values) / n,
        "tar_high": 100 * sum(180 < v <= 250 for v in values) / n,
        "tar_very_high": 100 * sum(v > 250 for v in values) / n,
        "active": 100 * n / (14 * 288),
    }


def _by_code(outputs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["code"]["coding"][0]["code"]: r for r in of(outputs, "Observation", "cgm-consensus")}


def test_metrics_equal_an_independent_computation(session) -> None:  # type: ignore[no-untyped-def]
    readings, values = synthetic_readings(seed=6)
    run = session("cgm-consensus")
    size = len(readings) // 15 + 1
    for start in range(0, len(readings), size):  # about a day per message, as a cloud sync
        run.post(readings[start:start + size])
    run.tick(START + timedelta(days=14))
    found = _by_code(run.outputs())
    want = independent(values)
    assert found["97507-8"]["valueQuantity"]["value"] == round(want["mean"], 1)
    assert found["97506-0"]["valueQuantity"]["value"] == round(want["gmi"], 2)
    assert found["104638-2"]["valueQuantity"]["value"] == round(want["cv"], 2)
    assert found["104637-4"]["valueQuantity"]["value"] == round(want["active"], 2)
    assert found["104636-6"]["valueQuantity"] == {"value": 14, "unit": "days",
                                                  "system": "http://unitsofmeasure.org",
                                                  "code": "d"}
    ranges = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"]
              for c in found["106793-3"]["component"]}
    assert ranges == {"104642-4": round(want["tbr_very_low"], 2),
                      "104641-6": round(want["tbr_low"], 2),
                      "97510-2": round(want["tir"], 2),
                      "104640-8": round(want["tar_high"], 2),
                      "104639-0": round(want["tar_very_high"], 2)}
    assert abs(sum(ranges.values()) - 100) < 0.05


def test_summary_is_coded_as_the_cgm_ig(session) -> None:  # type: ignore[no-untyped-def]
    readings, _ = synthetic_readings(seed=2)
    run = session("cgm-consensus")
    run.post(readings)
    run.tick(START + timedelta(days=14))
    found = _by_code(run.outputs())
    summary = found["cgm-summary"]
    assert summary["code"]["coding"][0]["system"] == \
        "http://hl7.org/fhir/uv/cgm/CodeSystem/cgm-summary-codes-temporary"
    assert summary["effectivePeriod"] == {"start": "2026-11-01", "end": "2026-11-14"}
    members = {m["reference"] for m in summary["hasMember"]}
    assert members == {f"Observation/{r['id']}" for code, r in found.items()
                       if code != "cgm-summary"}
    profiles = {code: r["meta"]["profile"][0].rsplit("/", 1)[1] for code, r in found.items()}
    assert profiles == {
        "cgm-summary": "cgm-summary", "97507-8": "cgm-summary-mean-glucose-mass-per-volume",
        "106793-3": "cgm-summary-times-in-ranges", "97506-0": "cgm-summary-gmi",
        "104638-2": "cgm-summary-coefficient-of-variation",
        "104636-6": "cgm-summary-days-of-wear",
        "104637-4": "cgm-summary-sensor-active-percentage"}
    for resource in found.values():
        validate(resource)
        assert resource["category"][0]["coding"][0]["code"] == "laboratory"
        assert resource["subject"]["reference"] == f"Patient/{run.patient}"
    assert found["97507-8"]["valueQuantity"]["unit"] == "mg/dl"  # as the IG's profile fixes it
    assert all(c["valueQuantity"]["code"] == "%" for c in found["106793-3"]["component"])


def test_targets_judged_only_on_sufficient_data(session) -> None:  # type: ignore[no-untyped-def]
    run = session("cgm-consensus")
    lows = [{"type": "cgm-glucose", "time": (START + timedelta(minutes=5 * i)).isoformat(),
             "value": 50 if i % 10 == 0 else 140, "unit": "mg/dL"} for i in range(3 * 288)]
    run.post(lows)  # 10 % below 54, but only 3 of 14 days: 21 % active
    run.tick(START + timedelta(days=14))
    summary = _by_code(run.outputs())["cgm-summary"]
    assert "targets not judged" in summary["note"][0]["text"]
    assert not of(run.outputs(), "Flag")


def test_replayed_readings_change_nothing(session) -> None:  # type: ignore[no-untyped-def]
    readings, _ = synthetic_readings(seed=3)
    run = session("cgm-consensus")
    run.post(readings)
    run.post(readings)
    run.tick(START + timedelta(days=14))
    first = {r["id"]: r for r in run.outputs()}
    other = session("cgm-consensus")
    other.post(readings)
    other.tick(START + timedelta(days=14))
    assert {r["id"]: r for r in other.outputs()} == first
