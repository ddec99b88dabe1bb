"""Golden tests: the corpus's IHE PCD-01 and Continua WAN messages → the FHIR they must produce.

Inputs are byte-identical copies in ``fixtures/hl7v2/`` (provenance in ``SOURCES.md`` there);
expected output in ``fixtures/expected/hl7v2/<stem>.json`` (a collection Bundle). Comparison is
on content: every resource (ids are deterministic) must be equal, ignoring only ``meta.source``
(the inbound message id of the run). ``HUB_UPDATE_GOLDEN=1`` rewrites the expected files (then
review the diff: it is the contract).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import orjson
import pytest

from tests.hl7v2_fhir.conftest import CORPUS_HL7, EXPECTED, FIXTURES, Converter

INPUTS = sorted(FIXTURES.glob("*.hl7"))
EUI64_SYSTEM = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
MDC = "urn:iso:std:iso:11073:10101"
LOINC = "http://loinc.org"


def _content(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for res in sorted(resources, key=lambda r: (r["resourceType"], r["id"])):
        res = orjson.loads(orjson.dumps(res))
        res.get("meta", {}).pop("source", None)
        out.append(res)
    return out


def test_inputs_are_the_corpus_files() -> None:
    assert len(INPUTS) == 11
    recorded = dict(re.findall(r"\| (\S+\.hl7) \|.*\| `([0-9a-f]{64})` \|",
                               (FIXTURES / "SOURCES.md").read_text()))
    for path in INPUTS:
        data = path.read_bytes()
        assert data == (CORPUS_HL7 / path.name).read_bytes(), path.name
        assert hashlib.sha256(data).hexdigest() == recorded[path.name], path.name


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.stem)
def test_golden(path, convert: Converter) -> None:
    result = convert(path.read_bytes())
    assert result.refused is None and not result.errors, (result.refused, result.errors)
    got = _content(result.resources)
    expected_file = EXPECTED / f"{path.stem}.json"
    if os.environ.get("HUB_UPDATE_GOLDEN"):
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": r} for r in got]}
        expected_file.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")
    expected = [e["resource"] for e in orjson.loads(expected_file.read_bytes())["entry"]]
    assert got == expected


def test_pcd01_bp_is_one_dual_coded_panel_on_the_device_tree(convert: Converter) -> None:
    """The classic PCD-01 NIBP message, read against the standards it follows."""
    result = convert((FIXTURES / "ipf_pcd01_bp-request.hl7").read_bytes())
    (obs,) = result.of("Observation")  # device rows produce none; sys/dia/mean one panel
    assert {(c["system"], c["code"]) for c in obs["code"]["coding"]} == {
        (LOINC, "85354-9"), (MDC, "150020")}
    parts = {c["code"]["coding"][1]["code"]: c for c in obs["component"]}
    assert {k: v["valueQuantity"]["value"] for k, v in parts.items()} == {
        "150021": 120, "150022": 80, "150023": 100}
    assert [c["code"]["coding"][0]["code"] for c in obs["component"]] == [
        "8480-6", "8462-4", "8478-0"]
    assert all(c["valueQuantity"]["code"] == "mm[Hg]" for c in obs["component"])
    assert obs["status"] == "preliminary"  # OBX-11 R: entered, not verified
    assert obs["effectiveDateTime"] == "2009-08-13T09:57:15+05:00"  # channel row's OBX-14
    devices = {d["id"]: d for d in result.of("Device")}
    mds = devices[obs["device"]["reference"].split("/")[1]]
    assert mds["identifier"][0]["system"] == EUI64_SYSTEM
    assert mds["identifier"][0]["value"] == "01-23-45-67-89-AB-CD-EF"  # OBX-18 of the MDS row
    channel = next(d for d in devices.values() if "parent" in d)
    assert channel["parent"]["reference"] == f"Device/{mds['id']}"
    assert channel["type"]["coding"][0]["code"] == "150020"
    gateway = obs["extension"][0]["valueReference"]["reference"].split("/")[1]
    assert devices[gateway]["identifier"][0]["value"] == "AC-DE-48-23-45-67-AB-CD"  # MSH-3


def test_maximal_pcd01_statuses_ranges_and_flags(convert: Converter) -> None:
    result = convert((FIXTURES / "ipf_pcd01_bp-maximal-request.hl7").read_bytes())
    by_mdc = {}
    for obs in result.of("Observation"):
        mdc = next(c["code"] for c in obs["code"]["coding"] if c["system"] == MDC)
        by_mdc.setdefault(mdc, []).append(obs)
    # Systolic C, diastolic D, mean F differ in status and detail: no panel, each on its own.
    (sys_,) = by_mdc["150021"]
    assert sys_["status"] == "corrected"
    assert sys_["referenceRange"][0]["high"]["value"] == 120  # OBX-7 "<120"
    assert sys_["interpretation"] == [{"text": "QUES"}]  # not a table 0078 code: kept as text
    assert sys_["bodySite"]["coding"][0]["code"] == "LA"
    (dia,) = by_mdc["150022"]
    assert dia["status"] == "entered-in-error"
    assert dia["referenceRange"][0]["low"]["value"] == 75
    (mean,) = by_mdc["150023"]
    assert mean["status"] == "final"
    (cancelled,) = by_mdc["1500232"]
    assert cancelled["status"] == "cancelled"  # OBX-11 X


def test_continua_weight_scale_codes_units_and_time(convert: Converter) -> None:
    result = convert((FIXTURES / "ipf_continua-wan_weight-scale.hl7").read_bytes())
    found = {}
    for obs in result.of("Observation"):
        codes = {c["code"] for c in obs["code"]["coding"]}
        found[frozenset(codes)] = obs
    weight = found[frozenset({"29463-7", "188736"})]
    assert weight["valueQuantity"] == {"value": 80, "unit": "kg", "system":
                                       "http://unitsofmeasure.org", "code": "kg"}
    assert weight["effectiveDateTime"] == "2009-08-15T07:07:07+00:00"
    assert found[frozenset({"39156-5", "188752"})]["valueQuantity"]["code"] == "kg/m2"
    assert found[frozenset({"8302-2", "188740"})]["valueQuantity"]["code"] == "cm"


def test_continua_thermometer_fahrenheit_converted(convert: Converter) -> None:
    (obs,) = convert((FIXTURES / "ipf_continua-wan_thermometer.hl7").read_bytes()).of(
        "Observation")
    assert obs["valueQuantity"]["code"] == "Cel"
    assert obs["valueQuantity"]["value"] == pytest.approx(37.0)  # 98.6 [degF]


def test_pulse_oximeter_pleth_array_is_sampled_data(convert: Converter) -> None:
    result = convert((FIXTURES / "ipf_continua-wan_pulse-oximeter.hl7").read_bytes())
    pleth = next(o for o in result.of("Observation") if "valueSampledData" in o)
    assert pleth["valueSampledData"]["data"] == "12 123 24 12 234 55 66 77 88 99"
    assert pleth["valueSampledData"]["dimensions"] == 1
    spo2 = next(o for o in result.of("Observation") if "valueQuantity" in o)
    assert {c["code"] for c in spo2["code"]["coding"]} == {"2708-6", "59408-5", "150456"}
