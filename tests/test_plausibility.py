"""Plausibility: implausible readings are kept, marked and held for review, never dropped.

The behaviour under test (docs/terminology.md § Plausibility): the Observation is stored with
status "preliminary", an HX/LX (or EX) interpretation from v3-ObservationInterpretation, a note
with a value-free reason and the tag urn:iomt-fhir-hub:plausibility|implausible; in-range
readings are untouched ("final", no interpretation, no note).
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from hub.contracts import Identifier, Measurement
from hub.mappings.catalogue import load_mapping_set
from hub.mappings.schema import Plausible, TypeSpec
from hub.normalize import plausibility
from hub.normalize.observation import Lineage, build_observation

from .conftest import REPO

V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
TAG = {"system": "urn:iomt-fhir-hub:plausibility", "code": "implausible",
       "display": "Implausible reading held for review"}


@pytest.fixture(scope="module")
def types() -> dict[str, TypeSpec]:
    return load_mapping_set(REPO / "mappings").types


def observe(types: dict[str, TypeSpec], type_name: str, values: dict[str, Any],
            unit: str) -> dict[str, Any]:
    m = Measurement(type=type_name, time=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
                    device=Identifier("urn:test:device", "d-1"), values=values, unit=unit)
    return build_observation(m, types[type_name], patient_id="p-1", device_id="d-1",
                             lineage=Lineage("00000000-0000-0000-0000-000000000001", "test"))


def codes(interpretation: list[dict[str, Any]] | None) -> list[str]:
    return [c["code"] for i in interpretation or [] for c in i["coding"]
            if c["system"] == V3]


def assert_held(obs: dict[str, Any]) -> str:
    assert obs["status"] == "preliminary"
    assert TAG in obs["meta"]["tag"]
    reason = plausibility.held_reason(obs)
    assert reason is not None and reason.startswith("held for review: ")
    assert obs["note"][0]["text"].startswith("Implausible reading held for review: ")
    return reason


def assert_valid(obs: dict[str, Any]) -> None:
    assert obs["status"] == "final"
    assert "interpretation" not in obs and "note" not in obs
    assert all(t["system"] != TAG["system"] for t in obs["meta"]["tag"])
    assert all("interpretation" not in c for c in obs.get("component", []))
    assert plausibility.held_reason(obs) is None


@pytest.mark.parametrize(("type_name", "value", "unit", "code"), [
    ("oxygen-saturation", 101, "%", "HX"),
    ("oxygen-saturation", -1, "%", "LX"),
    ("heart-rate", 19, "/min", "LX"),
    ("heart-rate", 301, "/min", "HX"),
    ("heart-rate-oximetry", 350, "bpm", "HX"),
    ("respiratory-rate", 1, "/min", "LX"),
    ("body-temperature", 24.9, "Cel", "LX"),
    ("body-temperature", 45.1, "Cel", "HX"),
    ("body-temperature", 120, "[degF]", "HX"),  # judged after conversion: 48.9 Cel
    ("body-weight", -1, "kg", "LX"),  # negative weight
    ("body-weight", 0, "kg", "LX"),  # > 0 is exclusive
    ("body-weight", 500, "kg", "HX"),  # < 500 is exclusive
    ("body-weight", 81830, "kg", "HX"),  # grams sent as kg
    ("body-height", 5.9, "[in_i]", "LX"),  # 15 cm
    ("bmi", 4, "kg/m2", "LX"),
    ("blood-pressure-systolic", 400, "mm[Hg]", "HX"),
    ("glucose-capillary", 5, "mg/dL", "LX"),
    ("glucose-capillary", 70, "mmol/L", "HX"),  # 1261 mg/dL after conversion
    ("glucose-capillary-molar", 0.5, "mmol/L", "LX"),
    ("cgm-glucose", 1001, "mg/dL", "HX"),
    ("steps", -5, "{steps}", "LX"),
    ("steps", 250_000, "steps", "HX"),
])
def test_out_of_range_values_are_held_with_the_reason(
        types: dict[str, TypeSpec], type_name: str, value: float, unit: str, code: str) -> None:
    obs = observe(types, type_name, {"value": value}, unit)
    reason = assert_held(obs)
    assert codes(obs["interpretation"]) == [code]
    assert obs["interpretation"][0]["text"] in reason
    assert "valueQuantity" in obs  # the reading itself is kept
    # The reason is safe for logs and lineage: it never repeats the reading's value.
    assert str(obs["valueQuantity"]["value"]) not in reason.replace(
        f"{_bound(types[type_name], code):g}", "")


def _bound(spec: TypeSpec, code: str) -> float:
    assert spec.plausible is not None
    bound = spec.plausible.max if code == "HX" else spec.plausible.min
    assert bound is not None
    return bound


@pytest.mark.parametrize(("type_name", "value", "unit"), [
    ("oxygen-saturation", 100, "%"),  # inclusive
    ("oxygen-saturation", 0, "%"),
    ("heart-rate", 20, "/min"),
    ("heart-rate", 300, "/min"),
    ("body-temperature", 98.6, "[degF]"),
    ("body-weight", 0.5, "kg"),
    ("body-weight", 499.9, "kg"),
    ("blood-pressure-systolic", 300, "mm[Hg]"),
    ("glucose-capillary", 10, "mg/dL"),
    ("glucose-capillary", 5.5, "mmol/L"),
    ("steps", 0, "{steps}"),
])
def test_in_range_values_are_final_and_unmarked(types: dict[str, TypeSpec], type_name: str,
                                                value: float, unit: str) -> None:
    assert_valid(observe(types, type_name, {"value": value}, unit))


def test_systolic_400_is_held_on_its_component(types: dict[str, TypeSpec]) -> None:
    obs = observe(types, "blood-pressure", {"systolic": 400, "diastolic": 80}, "mm[Hg]")
    reason = assert_held(obs)
    systolic, diastolic = obs["component"]
    assert codes(systolic["interpretation"]) == ["HX"]
    assert systolic["valueQuantity"]["value"] == 400  # kept, not clipped
    assert "interpretation" not in diastolic
    assert reason == ("held for review: Systolic blood pressure above the plausible maximum "
                      "300 mm[Hg]")
    assert "400" not in reason


def test_swapped_systolic_and_diastolic_are_held(types: dict[str, TypeSpec]) -> None:
    obs = observe(types, "blood-pressure", {"systolic": 80, "diastolic": 120}, "mm[Hg]")
    reason = assert_held(obs)
    assert codes(obs["interpretation"]) == ["EX"]
    assert "diastolic is not below systolic" in reason
    equal = observe(types, "blood-pressure", {"systolic": 90, "diastolic": 90}, "mm[Hg]")
    assert codes(equal["interpretation"]) == ["EX"]


def test_a_mean_outside_systolic_and_diastolic_is_held(types: dict[str, TypeSpec]) -> None:
    obs = observe(types, "blood-pressure", {"systolic": 120, "diastolic": 80, "mean": 130},
                  "mm[Hg]")
    assert "mean is not below systolic" in assert_held(obs)
    assert_valid(observe(types, "blood-pressure",
                         {"systolic": 120, "diastolic": 80, "mean": 93}, "mm[Hg]"))
    assert_valid(observe(types, "blood-pressure", {"systolic": 120, "diastolic": 80}, "mmHg"))


def test_several_problems_are_all_reported(types: dict[str, TypeSpec]) -> None:
    obs = observe(types, "blood-pressure", {"systolic": 10, "diastolic": 250}, "mm[Hg]")
    reason = assert_held(obs)
    assert "Systolic blood pressure below the plausible minimum 40 mm[Hg]" in reason
    assert "Diastolic blood pressure above the plausible maximum 200 mm[Hg]" in reason
    assert "diastolic is not below systolic" in reason
    assert [codes(c["interpretation"]) for c in obs["component"]] == [["LX"], ["HX"]]
    assert obs["meta"]["tag"].count(TAG) == 1


def test_every_quantity_type_and_component_has_a_range_with_a_rationale(
        types: dict[str, TypeSpec]) -> None:
    for name, spec in types.items():
        if not any(c.system == "http://loinc.org" for c in spec.codes):
            continue  # hub-local event types (smart pill bottle) are not measurements
        if spec.value == "quantity":
            assert spec.plausible is not None, name
            assert spec.plausible.why.strip(), name
        for comp in spec.components:
            assert comp.plausible is not None, (name, comp.input)
            assert comp.plausible.why.strip(), (name, comp.input)
    assert types["blood-pressure"].ordered == ["diastolic", "mean", "systolic"]


def test_the_issue_examples_use_the_documented_bounds(types: dict[str, TypeSpec]) -> None:
    spo2, weight = types["oxygen-saturation"].plausible, types["body-weight"].plausible
    systolic = types["blood-pressure"].components[0].plausible
    assert spo2 is not None and (spo2.min, spo2.max) == (0, 100)
    assert systolic is not None and (systolic.min, systolic.max) == (40, 300)
    assert weight is not None and (weight.min, weight.max) == (0, 500)
    assert weight.min_exclusive and weight.max_exclusive


def test_outside_handles_bounds_and_nan() -> None:
    rng = Plausible(min=0, max=10, min_exclusive=True, why="test")
    assert plausibility.outside(rng, 0) is plausibility.BELOW
    assert plausibility.outside(rng, 10) is None
    assert plausibility.outside(rng, 10.0001) is plausibility.ABOVE
    assert plausibility.outside(rng, math.nan) is plausibility.ABOVE
    only_max = Plausible(max=5, why="test")
    assert plausibility.outside(only_max, -1e9) is None


def test_ranges_are_checked_when_the_catalogue_loads() -> None:
    with pytest.raises(ValidationError, match="must be below max"):
        Plausible(min=10, max=10, why="x")
    with pytest.raises(ValidationError, match="give `min`, `max` or both"):
        Plausible(why="x")
    with pytest.raises(ValidationError, match="why"):
        Plausible(min=0, max=1, why="")
    with pytest.raises(ValidationError, match="not components"):
        TypeSpec.model_validate({"codes": [{"code": "85354-9", "display": "x"}],
                                 "value": "none", "ordered": ["diastolic", "systolic"]})


def test_held_reason_ignores_ordinary_preliminary_observations() -> None:
    assert plausibility.held_reason({"status": "preliminary", "meta": {"tag": []}}) is None
    assert plausibility.held_reason({"status": "final"}) is None


def test_the_in_range_shortcut_gives_what_review_gives(types: dict[str, TypeSpec]) -> None:
    """build_observation skips review for a single quantity inside its range (``bounds``);
    around every bound, and at it, the Observation is the one review alone makes."""
    from math import nextafter

    from hub.normalize import observation

    checked = 0
    for name, spec in types.items():
        template = observation._template(spec)
        if template.bounds is None or spec.unit is None:
            continue
        rng = spec.plausible
        assert rng is not None
        edges = [b for b in (rng.min, rng.max) if b is not None]
        values = [v for b in edges for v in (b - 1, nextafter(b, -1e300), b,
                                             nextafter(b, 1e300), b + 1)]
        if rng.min is not None and rng.max is not None:
            values.append((rng.min + rng.max) / 2)
        for value in values:
            fast = observe(types, name, {spec.input: value}, spec.unit.code)
            observation._templates[id(spec)] = replace(template, bounds=None)
            try:
                reviewed = observe(types, name, {spec.input: value}, spec.unit.code)
            finally:
                observation._templates[id(spec)] = template
            assert fast == reviewed, (name, value)
            checked += 1
    assert checked > 50
