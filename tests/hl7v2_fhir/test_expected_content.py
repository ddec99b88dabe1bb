"""Content checks against other converters' outputs (``../shared/corpus/hl7v2-expected``).

Those bundles come from Microsoft FHIR-Converter (msfc_*) and Google's Whistle mapping
(gcphdh_*): reference outputs, not ground truth, and they differ from each other. So this checks
content, not documents: for each of their Observations with a value, ours with the same code has
the same value (numerically, whatever the value[x] type), unit and wall-clock effective time;
statuses where both follow HL7's table 0085 map (F, P, C, D); for each Patient, the same family
names, birth date and sex, and our identifier values among theirs. Deliberate differences are
listed, with the reason, in ``DIFFERENCES``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest

from tests.hl7v2_fhir.conftest import CORPUS_HL7, EXPECTED_CORPUS, Converter

PAIRS = sorted(EXPECTED_CORPUS.glob("*.expected.json"))
# (file, code): why our output differs on purpose.
DIFFERENCES = {
    ("msfc_ORU-R01-01", "8867-4"): "OBX-5 repeats for NM: refused as an item, not converted "
                                   "without a value",
    ("gcphdh_adt-a01_v23_simhosp-maximal", "gender"): "PID-8 is '2', not a table 0001 code: "
                                                      "we leave gender out, Whistle guesses",
}
SAME_STATUS_CODES = {"final", "preliminary", "corrected", "entered-in-error"}


def _resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == rtype]


def _value(obs: dict[str, Any]) -> Any:
    if "valueQuantity" in obs:  # Whistle writes "<15" as a Quantity without a value
        value = obs["valueQuantity"].get("value")
        return None if value is None else float(value)
    if "valueString" in obs:
        try:
            return float(obs["valueString"])
        except ValueError:
            return obs["valueString"]
    if "valueCodeableConcept" in obs:
        return frozenset(c["code"] for c in obs["valueCodeableConcept"].get("coding", []))
    return None


def _same_time(ours: str, theirs: str) -> bool:
    """The same instant (both carried the source's offset), or the same wall clock (the source
    gave none and each converter applied its own default zone)."""
    a, b = datetime.fromisoformat(ours), datetime.fromisoformat(theirs)
    if a.tzinfo is not None and b.tzinfo is not None and a == b:
        return True
    return ours[:19] == theirs[:19]


def _codes(obs: dict[str, Any]) -> set[str]:
    return {c["code"] for c in obs["code"].get("coding", []) if "code" in c}


@pytest.mark.parametrize("expected_file", PAIRS,
                         ids=lambda p: p.name.removesuffix(".expected.json"))
def test_content_matches(expected_file, convert: Converter) -> None:
    stem = expected_file.name.removesuffix(".expected.json")
    theirs = orjson.loads(expected_file.read_bytes())
    ours = convert((CORPUS_HL7 / f"{stem}.hl7").read_bytes())
    if stem == "msfc_ADT-A40-01":
        assert not _resources(theirs, "Patient")  # FHIR-Converter emits nothing for A40
        assert ours.of("Patient")
        return
    is_adt = "adt" in stem.lower()
    checked = 0
    for their in _resources(theirs, "Observation"):
        if is_adt:
            break  # ADT OBX rows feed no Observation here: an ADT only updates the registry
        value = _value(their)
        if value is None:
            continue
        codes = _codes(their)
        reason = next((r for (f, c), r in DIFFERENCES.items() if f == stem and c in codes),
                      None)
        if reason:
            continue
        matches = [o for o in ours.of("Observation") if codes & _codes(o)]
        assert matches, f"no Observation coded {codes}"
        same = [o for o in matches if _value(o) == value]
        assert same, f"{codes}: value {value} not among {[_value(o) for o in matches]}"
        obs = same[0]
        if "effectiveDateTime" in their:
            assert _same_time(obs["effectiveDateTime"], their["effectiveDateTime"])
        unit = their.get("valueQuantity", {}).get("code") or their.get(
            "valueQuantity", {}).get("unit")
        if unit and "valueQuantity" in obs:
            assert unit in (obs["valueQuantity"].get("code"), obs["valueQuantity"].get("unit"))
        if their.get("status") in SAME_STATUS_CODES:
            assert obs["status"] == their["status"], codes
        checked += 1
    if not is_adt:
        assert checked, "nothing compared"
    for their in _resources(theirs, "Patient"):
        (patient,) = ours.of("Patient")
        if not is_adt:
            continue  # an ORU's subject is registered by identifier only
        families = {n.get("family") for n in their.get("name", [])}
        assert {n.get("family") for n in patient.get("name", [])} <= families
        assert patient.get("birthDate") == their.get("birthDate")
        if (stem, "gender") not in DIFFERENCES:
            assert patient.get("gender") == their.get("gender")
        values = {i.get("value") for i in their.get("identifier", [])}
        assert {i["value"] for i in patient["identifier"]} <= values
