"""NEWS2 exactly as the RCP 2017 chart: every cut-point of every parameter, both sides.

Each row is (value, expected score) taken from chart 1 ("The NEWS scoring system", Royal College
of Physicians, NEWS2 2017): the last value of one band and the first of the next. Values are
scored at the chart's resolution (integers; temperature in tenths), rounding half up.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from hub.rules.kinds.news2 import (
    risk,
    score_air_or_oxygen,
    score_consciousness,
    score_pulse,
    score_respiration_rate,
    score_spo2,
    score_systolic,
    score_temperature,
)
from hub.rules.program import load_program

from .conftest import T0, at, of, summary_of, validate

RESPIRATION = [(0, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3),
               (60, 3)]
SPO2_SCALE_1 = [(70, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
SPO2_SCALE_2_AIR = [(70, 3), (83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0),
                    (93, 0), (97, 0), (100, 0)]
SPO2_SCALE_2_OXYGEN = [(83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (93, 1),
                       (94, 1), (95, 2), (96, 2), (97, 3), (100, 3)]
SYSTOLIC = [(60, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0),
            (220, 3), (260, 3)]
PULSE = [(30, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2),
         (130, 2), (131, 3), (200, 3)]
TEMPERATURE = [(33.0, 3), (35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1),
               (39.0, 1), (39.1, 2), (41.0, 2)]


@pytest.mark.parametrize(("value", "score"), RESPIRATION)
def test_respiration_rate(value: float, score: int) -> None:
    assert score_respiration_rate(value) == score


@pytest.mark.parametrize(("value", "score"), SPO2_SCALE_1)
def test_spo2_scale_1_ignores_oxygen(value: float, score: int) -> None:
    for on_oxygen in (None, False, True):
        assert score_spo2(value, 1, on_oxygen) == score


@pytest.mark.parametrize(("value", "score"), SPO2_SCALE_2_AIR)
def test_spo2_scale_2_on_air(value: float, score: int) -> None:
    assert score_spo2(value, 2, False) == score
    assert score_spo2(value, 2, None) == score  # unknown: scored as air, the lower bound


@pytest.mark.parametrize(("value", "score"), SPO2_SCALE_2_OXYGEN)
def test_spo2_scale_2_on_oxygen(value: float, score: int) -> None:
    assert score_spo2(value, 2, True) == score


@pytest.mark.parametrize(("value", "score"), SYSTOLIC)
def test_systolic(value: float, score: int) -> None:
    assert score_systolic(value) == score


@pytest.mark.parametrize(("value", "score"), PULSE)
def test_pulse(value: float, score: int) -> None:
    assert score_pulse(value) == score


@pytest.mark.parametrize(("value", "score"), TEMPERATURE)
def test_temperature(value: float, score: int) -> None:
    assert score_temperature(value) == score


def test_air_or_oxygen_and_consciousness() -> None:
    assert score_air_or_oxygen(False) == 0 and score_air_or_oxygen(True) == 2
    assert score_consciousness(True) == 0 and score_consciousness(False) == 3


@pytest.mark.parametrize(("scorer", "below", "above"), [
    (score_respiration_rate, (8.49, 3), (8.5, 1)),      # 8.5 rounds to 9
    (score_systolic, (90.4, 3), (90.5, 2)),
    (score_pulse, (130.49, 2), (130.5, 3)),
    (score_temperature, (35.04, 3), (35.05, 1)),        # 35.05 is 35.1 at the chart's tenths
    (score_temperature, (38.04, 0), (38.05, 1)),
])
def test_values_between_cut_points_round_half_up(scorer, below, above) -> None:  # type: ignore[no-untyped-def]
    assert scorer(below[0]) == below[1]
    assert scorer(above[0]) == above[1]


def test_spo2_between_cut_points() -> None:
    assert score_spo2(91.49, 1, None) == 3
    assert score_spo2(91.5, 1, None) == 2


def test_risk_bands() -> None:
    assert [risk(a, three) for a, three in [(0, False), (4, False), (3, True), (5, False),
                                             (6, True), (7, False), (20, True)]] == \
        ["low", "low", "low-medium", "medium", "medium", "high", "high"]


def test_partial_set_is_a_lower_bound_and_says_what_is_missing(session) -> None:  # type: ignore[no-untyped-def]
    run = session("news2")
    run.post([{"type": "respiratory-rate", "time": at(0), "value": 21, "unit": "/min"},
              {"type": "oxygen-saturation", "time": at(1), "value": 94, "unit": "%"},
              {"type": "heart-rate", "time": at(2), "value": 95, "unit": "/min"}])
    assert not of(run.outputs(), "Observation", "news2")  # written when the window closes
    run.tick(T0 + timedelta(hours=1))
    (score,) = of(run.outputs(), "Observation", "news2")
    validate(score)
    assert score["valueQuantity"] == {"value": 4, "comparator": ">=", "unit": "{score}",
                                      "system": "http://unitsofmeasure.org", "code": "{score}"}
    absent = [c for c in score["component"] if "dataAbsentReason" in c]
    assert len(absent) == 4  # air/oxygen, systolic, consciousness, temperature
    assert all(c["dataAbsentReason"]["coding"][0]["code"] == "not-performed" for c in absent)
    present = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"]
               for c in score["component"] if "valueQuantity" in c}
    assert present == {"1104301000000104": 2, "1104311000000102": 1, "1104351000000103": 1}
    assert "partial" in score["note"][0]["text"]
    assert score["code"]["coding"][0] == {
        "system": "http://snomed.info/sct", "code": "1104051000000101",
        "display": "Royal College of Physicians NEWS2 (National Early Warning Score 2) total "
                   "score"}
    assert score["derivedFrom"] and len(score["derivedFrom"]) == 3
    assert not of(run.outputs(), "Flag")  # 4, no 3: below every threshold


PROGRAM_WITH_CONSCIOUSNESS = """
version: 7
measures:
  rr: {title: RR, unit: /min, codes: ["http://loinc.org|9279-1"]}
  spo2: {title: SpO2, unit: "%", codes: ["http://loinc.org|59408-5"]}
  sbp: {title: SBP, unit: "mm[Hg]", codes: ["http://loinc.org|8480-6"]}
  hr: {title: Pulse, unit: /min, codes: ["http://loinc.org|8867-4"]}
  temp: {title: Temperature, unit: Cel, codes: ["http://loinc.org|8310-5"]}
  acvpu: {title: ACVPU, codes: ["urn:test:codes|acvpu"]}
  o2: {title: O2 flow, unit: L/min, codes: ["urn:test:codes|o2-flow"]}
rules:
  - id: news2-ward
    kind: news2
    title: NEWS2 (ward)
    source: test
    respiration_rate: rr
    spo2: spo2
    systolic: sbp
    pulse: hr
    temperature: temp
    consciousness: acvpu
    alert_codes: ["urn:test:codes|A"]
    oxygen: o2
    spo2_scale: 2
"""


def _coded(code: str, value: str, t: str) -> dict:  # type: ignore[type-arg]
    return {"resourceType": "Observation", "id": f"obs-{code}-{t}", "status": "final",
            "code": {"coding": [{"system": "urn:test:codes", "code": code}]},
            "subject": {"reference": "Patient/ward-1"}, "effectiveDateTime": t,
            "valueCodeableConcept": {"coding": [{"system": "urn:test:codes", "code": value}]}}


def _quantity(system: str, code: str, value: float, unit: str, t: str) -> dict:  # type: ignore[type-arg]
    return {"resourceType": "Observation", "id": f"obs-{code}-{t}", "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": "Patient/ward-1"}, "effectiveDateTime": t,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                              "code": unit}}


def test_a_complete_set_with_consciousness_and_oxygen_on_scale_2(session, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "ward.yaml").write_text(PROGRAM_WITH_CONSCIOUSNESS, encoding="utf-8")
    run = session(program=load_program(tmp_path))
    loinc = "http://loinc.org"
    run.evaluate([
        _quantity(loinc, "9279-1", 18, "/min", at(0)),        # 0
        _quantity(loinc, "59408-5", 95, "%", at(0)),          # scale 2 on O2: 95-96 -> 2
        _quantity(loinc, "8480-6", 105, "mm[Hg]", at(0)),     # 1
        _quantity(loinc, "8867-4", 88, "/min", at(0)),        # 0
        _quantity(loinc, "8310-5", 38.5, "Cel", at(0)),       # 1
        _coded("acvpu", "V", at(0)),                          # not alert: 3
        _quantity("urn:test:codes", "o2-flow", 2, "L/min", at(0)),  # on oxygen: 2
    ])
    flag, = of(run.outputs(), "Flag", "news2-ward")
    assert summary_of(flag).startswith("NEWS2 9 (complete); clinical risk high")
    run.tick(T0 + timedelta(hours=1))
    (score,) = of(run.outputs(), "Observation", "news2-ward")
    validate(score)
    assert score["valueQuantity"]["value"] == 9 and "comparator" not in score["valueQuantity"]
    assert not [c for c in score["component"] if "dataAbsentReason" in c]
    assert "1104321000000108" in {c["code"]["coding"][0]["code"] for c in score["component"]}
    priority = next(e for e in flag["extension"] if e["url"].endswith("flag-priority"))
    assert priority["valueCodeableConcept"]["coding"][0]["code"] == "PH"  # 9 >= 7
