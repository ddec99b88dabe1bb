"""Every catalogue type builds an Observation that FHIR R4 (fhir.resources R4B) accepts.

build_observation makes plain dicts on the hot path (validating each with fhir.resources costs
~90 µs, see hub/normalize/observation.py), so the templates are proven here once per type:
R4B model validation (R4B, not the package's default R5), plus the R4 vital-signs profile's
requirements for the vital-signs types (category vital-signs, a subject, an effective time, a
UCUM valueQuantity with the profile's code, systolic and diastolic components for BP).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation

from hub.contracts import Identifier, Measurement
from hub.mappings.catalogue import load_mapping_set
from hub.mappings.schema import LOINC, UCUM, TypeSpec
from hub.normalize.observation import CATEGORY_SYSTEM, Lineage, build_observation

from .conftest import REPO

TYPES = load_mapping_set(REPO / "mappings").types

# A typical reading per type, in its canonical unit (synthetic; no patient data).
TYPICAL: dict[str, dict[str, Any]] = {
    "heart-rate": {"value": 72},
    "heart-rate-oximetry": {"value": 68},
    "respiratory-rate": {"value": 16},
    "oxygen-saturation": {"value": 97},
    "body-temperature": {"value": 36.8},
    "body-height": {"value": 172.5},
    "body-weight": {"value": 81.4},
    "bmi": {"value": 27.4},
    "blood-pressure": {"systolic": 128, "diastolic": 82, "mean": 97},
    "blood-pressure-systolic": {"value": 128},
    "blood-pressure-diastolic": {"value": 82},
    "blood-pressure-mean": {"value": 97},
    "glucose-blood": {"value": 104},
    "glucose-capillary": {"value": 104},
    "glucose-capillary-molar": {"value": 5.8},
    "cgm-glucose": {"value": 120},
    "cgm-glucose-molar": {"value": 6.7},
    "steps": {"value": 8542},
    # hub-local event types (mappings/types/medication-events.yaml): RxNorm as "system|code"
    "medication-dose-taken": {"medication": "http://www.nlm.nih.gov/research/umls/rxnorm|314076",
                              "doses": 1},
    "medication-dose-missed": {"medication": "http://www.nlm.nih.gov/research/umls/rxnorm|314076",
                               "doses": 1},
    "medication-bottle-opened": {"medication": "http://www.nlm.nih.gov/research/umls/rxnorm|"
                                               "314076"},
}


def build(type_name: str, values: dict[str, Any], unit: str | None) -> dict[str, Any]:
    m = Measurement(type=type_name, time=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
                    device=Identifier("urn:test:device", "d-1"), values=values, unit=unit,
                    mapping="mappings/devices/test.yaml@1")
    return build_observation(m, TYPES[type_name], patient_id="p-1", device_id="d-1",
                             lineage=Lineage("00000000-0000-0000-0000-000000000001", "test"))


def canonical_unit(spec: TypeSpec) -> str | None:
    if spec.unit is not None:
        return spec.unit.code
    return spec.components[0].unit.code if spec.components else None


def test_every_type_has_a_typical_reading() -> None:
    assert set(TYPICAL) == set(TYPES)


@pytest.mark.parametrize("type_name", sorted(TYPES))
def test_observation_is_valid_r4(type_name: str) -> None:
    spec = TYPES[type_name]
    obs = build(type_name, TYPICAL[type_name], canonical_unit(spec))
    model = Observation.model_validate(obs)
    assert model.status == "final"
    again = model.model_dump(mode="json", exclude_none=True)
    assert again["code"] == obs["code"] and again["id"] == obs["id"]
    assert obs["code"]["coding"][0]["system"] == spec.codes[0].system
    assert [c["code"] for c in obs["code"]["coding"]] == [c.code for c in spec.codes]
    if spec.category in ("vital-signs", "laboratory", "activity"):
        assert spec.codes[0].system == LOINC
    if spec.category is not None:
        assert obs["category"] == [{"coding": [{
            "system": CATEGORY_SYSTEM, "code": spec.category,
            "display": {"vital-signs": "Vital Signs", "laboratory": "Laboratory",
                        "activity": "Activity"}[spec.category]}]}]
    if spec.profile is not None:
        assert obs["meta"]["profile"] == [spec.profile]
    if spec.unit is not None:
        quantity = obs["valueQuantity"]
        assert quantity["system"] == UCUM and quantity["code"] == spec.unit.code
        assert quantity["unit"] == spec.unit.display


@pytest.mark.parametrize("type_name", sorted(n for n, s in TYPES.items()
                                             if s.category == "vital-signs"))
def test_vital_signs_profile_requirements(type_name: str) -> None:
    spec = TYPES[type_name]
    obs = build(type_name, TYPICAL[type_name], canonical_unit(spec))
    # R4 observation-vitalsigns: category vital-signs, subject 1..1, effective[x] 1..1, a
    # valueQuantity with system UCUM and a code, or components (vs-2).
    assert {"system": CATEGORY_SYSTEM, "code": "vital-signs", "display": "Vital Signs"} in [
        c for cat in obs["category"] for c in cat["coding"]]
    assert obs["subject"] == {"reference": "Patient/p-1"}
    assert obs["effectiveDateTime"] == "2026-11-20T08:00:00+00:00"
    assert obs["meta"]["profile"][0].startswith("http://hl7.org/fhir/StructureDefinition/")
    if spec.components:
        assert "valueQuantity" not in obs
        for component in obs["component"]:
            assert component["valueQuantity"]["system"] == UCUM
            assert component["valueQuantity"]["code"] == "mm[Hg]"
    else:
        assert obs["valueQuantity"]["system"] == UCUM
        assert isinstance(obs["valueQuantity"]["value"], int | float)


def test_blood_pressure_panel_components() -> None:
    obs = build("blood-pressure", {"systolic": 128, "diastolic": 82}, "mmHg")
    Observation.model_validate(obs)
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"])
            for c in obs["component"]] == [("8480-6", 128), ("8462-4", 82)]
    assert obs["code"]["coding"][0]["code"] == "85354-9"
    with_mean = build("blood-pressure", TYPICAL["blood-pressure"], "mm[Hg]")
    assert [c["code"]["coding"][0]["code"] for c in with_mean["component"]] == [
        "8480-6", "8462-4", "8478-0"]


@pytest.mark.parametrize(("type_name", "values", "unit"), [
    ("body-weight", {"value": 180.4}, "[lb_av]"),
    ("body-temperature", {"value": 98.6}, "[degF]"),
    ("glucose-capillary", {"value": 6.0}, "mmol/L"),
    ("blood-pressure", {"systolic": 16.0, "diastolic": 10.7}, "kPa"),
])
def test_converted_observations_are_valid_r4(type_name: str, values: dict[str, Any],
                                             unit: str) -> None:
    obs = build(type_name, values, unit)
    Observation.model_validate(obs)


@pytest.mark.parametrize(("type_name", "values"), [
    ("oxygen-saturation", {"value": 101}),
    ("blood-pressure", {"systolic": 400, "diastolic": 80}),
    ("blood-pressure", {"systolic": 80, "diastolic": 120}),
    ("body-weight", {"value": -1}),
])
def test_held_observations_are_valid_r4(type_name: str, values: dict[str, Any]) -> None:
    obs = build(type_name, values, canonical_unit(TYPES[type_name]))
    model = Observation.model_validate(obs)
    assert model.status == "preliminary"
    assert model.note and model.note[0].text
