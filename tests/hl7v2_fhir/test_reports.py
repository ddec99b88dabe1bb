"""ORU OBR → DiagnosticReport: content against other converters, the PCD-01 rule, the field map.

The corpus's expected bundles come from FHIR-Converter (msfc_*) and Whistle (gcphdh_*): for
each report we make, theirs with the same OBR-4 code has the same status, effective and issued
instants (or wall clock, when the source gave no offset and each converter applied its own
zone) and, where they list results, as many. Their reports without a counterpart here are
listed in ``THEIRS_ONLY`` with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from tests.hl7v2_fhir.conftest import CORPUS_HL7, EXPECTED_CORPUS, Converter, corpus_files

# (file, their report code): why we make no such report.
THEIRS_ONLY = {
    ("msfc_ORU-R01-01", "8867-4"): "FHIR-Converter makes a report of an OBX (ED/RP value); "
                                   "reports come from OBR here",
    ("msfc_ORU-R01-01", "1063-7"): "the same, for the second OBX",
    ("gcphdh_oru-r01_v23_icu-monitor-vitals-local-codes", "1003-3"):
        "OBR-4 is empty: Whistle writes a default code, we make no report without OBR-4",
    ("gcphdh_oru-r01_v23_icu-monitor-vitals-st-segments", "1003-3"):
        "OBR-4 is empty (as above)",
}


def _reports(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == "DiagnosticReport"]


def _code(report: dict[str, Any]) -> str:
    return str(report["code"]["coding"][0].get("code"))


def _same_time(ours: str, theirs: str) -> bool:
    a, b = datetime.fromisoformat(ours), datetime.fromisoformat(theirs)
    return a == b or ours[:19] == theirs[:19]


def _with_reports() -> list[str]:
    return sorted(p.name.removesuffix(".expected.json")
                  for p in EXPECTED_CORPUS.glob("*.expected.json")
                  if _reports(orjson.loads(p.read_bytes())))


@pytest.mark.parametrize("stem", _with_reports())
def test_reports_match_other_converters(stem: str, convert: Converter) -> None:
    theirs = _reports(orjson.loads((EXPECTED_CORPUS / f"{stem}.expected.json").read_bytes()))
    result = convert((CORPUS_HL7 / f"{stem}.hl7").read_bytes())
    ours = {_code(r): r for r in result.of("DiagnosticReport")}
    observations = {o["id"] for o in result.of("Observation")}
    compared = 0
    for their in theirs:
        code = _code(their)
        if (stem, code) in THEIRS_ONLY:
            assert code not in ours
            continue
        mine = ours.pop(code)
        assert mine["status"] == their["status"], code
        if "effectiveDateTime" in their:
            assert _same_time(mine["effectiveDateTime"], their["effectiveDateTime"])
        if "issued" in their:
            assert _same_time(mine["issued"], their["issued"])
        if their.get("result"):
            assert len(mine["result"]) == len(their["result"])
        assert {r["reference"].split("/")[1] for r in mine["result"]} <= observations
        (patient,) = result.of("Patient")
        assert mine["subject"] == {"reference": f"Patient/{patient['id']}"}
        DiagnosticReport.model_validate(mine)
        compared += 1
    assert not ours, f"reports they do not make: {sorted(ours)}"
    if stem.startswith("msfc_") or "lab" in stem:
        assert compared


@pytest.mark.parametrize("path", [p for p in corpus_files()
                                  if "pcd01" in p.name or "continua" in p.name],
                         ids=lambda p: p.name)
def test_device_observation_reports_are_not_made(path, convert: Converter) -> None:
    """IHE PCD-01 / Continua: the OBR is the profile's container, not an ordered test."""
    result = convert(path.read_bytes())
    assert not result.of("DiagnosticReport")


def _oru(obr: str, *, obx: str = "OBX|1|NM|2345-7^Glucose^LN||98|mg/dL|||||F",
         orc: str | None = None, msh21: str = "") -> bytes:
    lines = ["MSH|^~\\&|LAB|NORTH|HUB|HUB|20240105101500+0100||ORU^R01^ORU_R01|C1|P|2.5.1"
             + ("|||||||||" + msh21 if msh21 else ""),
             "PID|1||MRN-7^^^NORTH&1.2.3.4&ISO^MR||Doe^Jane"]
    if orc is not None:
        lines.append(orc)
    lines += [obr, obx]
    return ("\r".join(lines) + "\r").encode()


def _one(convert: Converter, body: bytes) -> dict[str, Any]:
    result = convert(body)
    assert result.refused is None and not result.errors, (result.refused, result.errors)
    (report,) = result.of("DiagnosticReport")
    DiagnosticReport.model_validate(report)
    return report


LAB_OBR = ("OBR|1|PL-1^ORDERS^2.16.1.1^ISO|FI-9^LAB^2.16.9.9^ISO|24331-1^Lipid panel^LN|||"
           "20240105080000+0100|20240105083000+0100||||||||||||||20240105101000+0100||CH|F"
           "|||||||PI-1&Interp&Ida&&&Dr.||TECH-3&Tech&Tom&&&&&&LABSTAFF")


def test_obr_fields_map_as_the_v2_to_fhir_conceptmap_says(convert: Converter) -> None:
    report = _one(convert, _oru(LAB_OBR))
    assert report["code"]["coding"] == [{"system": "http://loinc.org", "code": "24331-1",
                                         "display": "Lipid panel"}]
    assert report["status"] == "final"
    assert report["category"] == [{"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "CH"}]}]
    assert report["effectivePeriod"] == {"start": "2024-01-05T08:00:00+01:00",
                                         "end": "2024-01-05T08:30:00+01:00"}
    assert report["issued"] == "2024-01-05T10:10:00+01:00"
    typed = {i["type"]["coding"][0]["code"]: (i["system"], i["value"])
             for i in report["identifier"] if "type" in i}
    assert typed == {"PLAC": ("urn:oid:2.16.1.1", "PL-1"),
                     "FILL": ("urn:oid:2.16.9.9", "FI-9")}
    assert report["resultsInterpreter"] == [{
        "type": "Practitioner", "display": "Dr. Ida Interp",
        "identifier": {"system": "urn:iomt-fhir-hub:hl7v2:practitioner:NORTH", "value": "PI-1"}}]
    assert report["performer"] == [{
        "type": "Practitioner", "display": "Tom Tech",
        "identifier": {"system": "urn:iomt-fhir-hub:hl7v2:aa:LABSTAFF", "value": "TECH-3"}}]
    assert len(report["result"]) == 1
    assert report["meta"]["source"].startswith("urn:uuid:")


@pytest.mark.parametrize(("obr25", "status"), [
    ("O", "registered"), ("I", "registered"), ("S", "registered"), ("A", "partial"),
    ("P", "preliminary"), ("C", "corrected"), ("R", "partial"), ("F", "final"),
    ("X", "cancelled"), ("", "unknown"), ("Y", "unknown"), ("M", "unknown")])
def test_result_status_table_0123(obr25: str, status: str, convert: Converter) -> None:
    obr = "OBR|1||FI-1^LAB|2345-7^Glucose^LN|||20240105080000" + "|" * 18 + obr25
    assert _one(convert, _oru(obr))["status"] == status


def test_the_same_order_keeps_its_id_when_corrected(convert: Converter) -> None:
    """A corrected report (OBR-25 C, new values) sent again replaces the first: same id."""
    first = _one(convert, _oru(LAB_OBR))
    corrected = _one(convert, _oru(LAB_OBR.replace("|CH|F|", "|CH|C|"),
                                   obx="OBX|1|NM|2345-7^Glucose^LN||101|mg/dL|||||C"))
    assert corrected["id"] == first["id"] and corrected["status"] == "corrected"
    other_order = _one(convert, _oru(LAB_OBR.replace("FI-9", "FI-10")))
    assert other_order["id"] != first["id"]


def test_order_numbers_come_from_orc_when_the_obr_has_none(convert: Converter) -> None:
    orc = "ORC|RE|PL-5^ORDERS|FI-5^LAB"
    report = _one(convert, _oru("OBR|1|||2345-7^Glucose^LN|||20240105080000", orc=orc))
    values = {i["value"] for i in report["identifier"]}
    assert {"PL-5", "FI-5"} <= values


def test_two_groups_of_one_order_are_one_report(convert: Converter) -> None:
    body = _oru("OBR|1||FI-2^LAB|2345-7^Glucose^LN|||20240105080000").decode()
    body += ("OBR|2||FI-2^LAB|2345-7^Glucose^LN|||20240105080000\r"
             "OBX|1|NM|2339-0^Glucose Bld^LN||99|mg/dL|||||F\r")
    report = _one(convert, body.encode())
    assert len(report["result"]) == 2


@pytest.mark.parametrize("obr", [
    "OBR|1||FI-3^LAB||||20240105080000",  # no OBR-4: DiagnosticReport.code is required
    "OBR|1||FI-3^LAB|528391^MDC_DEV_SPEC_PROFILE_BP^MDC|||20240105080000",
    "OBR|1||FI-3^LAB|182777000^monitoring of patient^SNOMED-CT|||20240105080000",
])
def test_no_report_without_a_code_or_for_device_monitoring(obr: str,
                                                           convert: Converter) -> None:
    result = convert(_oru(obr))
    assert result.of("Observation") and not result.of("DiagnosticReport")


def test_no_report_for_a_message_declaring_pcd01(convert: Converter) -> None:
    profile = "IHE PCD ORU-R01 2006^HL7^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
    result = convert(_oru("OBR|1||FI-4^LAB|2345-7^Glucose^LN|||20240105080000", msh21=profile))
    assert result.of("Observation") and not result.of("DiagnosticReport")


def test_no_report_when_none_of_its_rows_converts(convert: Converter) -> None:
    result = convert(_oru("OBR|1||FI-6^LAB|2345-7^Glucose^LN|||20240105080000",
                          obx="OBX|1|ED|2345-7^Glucose^LN||data"))
    assert result.errors and not result.of("DiagnosticReport")
