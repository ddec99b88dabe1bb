"""OBX semantics one at a time: value types, status, ranges, flags, method, equipment, times."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.observation import Observation

from hub.hl7v2 import parse_message
from hub.mappings.catalogue import load_mapping_set
from tests.conftest import REPO
from tests.hl7v2_fhir.conftest import Converter

MSH = "MSH|^~\\&|MON^0011223344556677^EUI-64|WARD|HUB|HOSP|{msh7}||ORU^R01^ORU_R01|{ctl}|P|2.6"
PID = "PID|||MRN-1^^^HOSP&1.2.3.4&ISO^MR"
OBR = "OBR|1|||LAB^panel^L|||{obr7}"


def oru(*obx: str, msh7: str = "20240105100000+0100", obr7: str = "", ctl: str = "C1") -> bytes:
    lines = [MSH.format(msh7=msh7, ctl=ctl), PID, OBR.format(obr7=obr7), *obx]
    return ("\r".join(lines) + "\r").encode()


def one(convert: Converter, *obx: str, **kw: Any) -> dict[str, Any]:
    result = convert(oru(*obx, **kw))
    assert result.refused is None and not result.errors, (result.refused, result.errors)
    (obs,) = result.of("Observation")
    Observation.model_validate(obs)
    return obs


def test_nm_with_comparator(convert: Converter) -> None:
    obs = one(convert, "OBX|1|NM|2345-7^Glucose^LN||<40|mg/dL^^UCUM|||||F")
    assert obs["valueQuantity"] == {"value": 40, "comparator": "<", "unit": "mg/dL",
                                    "system": "http://unitsofmeasure.org", "code": "mg/dL"}
    assert obs["category"][0]["coding"][0]["code"] == "laboratory"


def test_nm_comparator_on_a_catalogue_type(convert: Converter) -> None:
    obs = one(convert, "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.0.1|>=99|262688^"
                       "MDC_DIM_PERCENT^MDC|||||F")
    assert obs["valueQuantity"]["comparator"] == ">="
    assert obs["valueQuantity"]["value"] == 99
    assert {c["code"] for c in obs["code"]["coding"]} == {"2708-6", "59408-5", "150456"}


@pytest.mark.parametrize(("sn", "key", "expected"), [
    ("^175", "valueQuantity", {"value": 175, "unit": "mg/dl"}),
    ("<^40", "valueQuantity", {"value": 40, "comparator": "<", "unit": "mg/dl"}),
    ("^1^-^5", "valueRange", {"low": {"value": 1, "unit": "mg/dl"},
                              "high": {"value": 5, "unit": "mg/dl"}}),
    ("^1^:^128", "valueRatio", {"numerator": {"value": 1}, "denominator": {"value": 128}}),
    ("^2^+", "valueString", "2+"),
])
def test_structured_numeric(convert: Converter, sn: str, key: str, expected: Any) -> None:
    obs = one(convert, f"OBX|1|SN|5196-1^Titer^LN||{sn}|mg/dl|||||F")
    assert obs[key] == expected


def test_text_types(convert: Converter) -> None:
    st = one(convert, "OBX|1|ST|11506-3^Note^LN||a \\F\\ b^c|||||F")
    assert st["valueString"] == "a | b^c"  # escapes undone, a stray ^ kept in free text
    tx = one(convert, "OBX|1|TX|11506-3^Note^LN||line one~line two|||||F")
    assert tx["valueString"] == "line one\nline two"


def test_coded_value(convert: Converter) -> None:
    obs = one(convert, "OBX|1|CWE|625-4^Culture^LN||27268008^Salmonella^SCT^SAL^Salm^L|||||F")
    coding = obs["valueCodeableConcept"]["coding"]
    assert coding[0] == {"system": "http://snomed.info/sct", "code": "27268008",
                         "display": "Salmonella"}
    assert coding[1]["code"] == "SAL"
    assert coding[1]["system"].startswith("urn:iomt-fhir-hub:hl7v2:local:")


def test_date_time_value_keeps_precision(convert: Converter) -> None:
    assert one(convert, "OBX|1|DTM|21112-8^Birth^LN||19700101|||||F")[
        "valueDateTime"] == "1970-01-01"
    assert one(convert, "OBX|1|DTM|21112-8^Birth^LN||202401051030-0500|||||F")[
        "valueDateTime"] == "2024-01-05T10:30:00-05:00"


def test_numeric_arrays_are_sampled_data(convert: Converter) -> None:
    na = one(convert, "OBX|1|NA|150452^MDC_PULS_OXIM_PLETH^MDC|1.0.0.2|1^2^3|262656^"
                      "MDC_DIM_DIMLESS^MDC|||||F")
    assert na["valueSampledData"] == {
        "origin": {"value": 0, "unit": "1", "system": "http://unitsofmeasure.org",
                   "code": "1"}, "period": 0, "dimensions": 1, "data": "1 2 3"}
    ma = one(convert, "OBX|1|MA|131328^MDC_ECG_ELEC_POTL^MDC|1.0.0.3|1^10~2^20~3^30|"
                      "266418^MDC_DIM_MILLI_VOLT^MDC|||||F")
    assert ma["valueSampledData"]["dimensions"] == 2
    assert ma["valueSampledData"]["data"] == "1 10 2 20 3 30"


@pytest.mark.parametrize(("obx11", "status"), [
    ("F", "final"), ("C", "corrected"), ("A", "amended"), ("P", "preliminary"),
    ("R", "preliminary"), ("S", "preliminary"), ("D", "entered-in-error"),
    ("W", "entered-in-error"), ("I", "registered"), ("U", "final"), ("", "unknown"),
])
def test_result_status(convert: Converter, obx11: str, status: str) -> None:
    obs = one(convert, f"OBX|1|NM|8867-4^HR^LN||72|/min^^UCUM|||||{obx11}")
    assert obs["status"] == status
    assert obs["valueQuantity"]["value"] == 72


def test_cannot_be_obtained_has_no_value_and_a_reason(convert: Converter) -> None:
    obs = one(convert, "OBX|1|NM|8867-4^HR^LN|||/min^^UCUM|||||X")
    assert obs["status"] == "cancelled"
    assert "valueQuantity" not in obs
    assert obs["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert obs["code"]["coding"][0]["code"] == "8867-4"  # still the heart-rate type


def test_reference_range_interpretation_method_and_notes(convert: Converter) -> None:
    obs = one(convert, "OBX|1|NM|2823-3^Potassium^LN||5.9|mmol/L^^UCUM|3.5-5.3|H~A|||F"
                       "||||||AMEAS^auto^MDC", "NTE|1||checked twice")
    assert obs["referenceRange"] == [{
        "low": {"value": 3.5, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                "code": "mmol/L"},
        "high": {"value": 5.3, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                 "code": "mmol/L"}, "text": "3.5-5.3"}]
    system = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    assert [i["coding"][0] for i in obs["interpretation"]] == [
        {"system": system, "code": "H"}, {"system": system, "code": "A"}]
    assert obs["method"]["coding"][0] == {"system": "urn:iso:std:iso:11073:10101",
                                          "code": "AMEAS", "display": "auto"}
    assert obs["note"] == [{"text": "checked twice"}]


def test_equipment_eui64_names_the_device(convert: Converter) -> None:
    result = convert(oru("OBX|1|NM|8867-4^HR^LN||72|/min^^UCUM|||||F|||||||"
                         "id^ns^A0B1C2D3E4F50617^EUI-64"))
    (obs,) = result.of("Observation")
    device = next(d for d in result.of("Device")
                  if f"Device/{d['id']}" == obs["device"]["reference"])
    assert device["identifier"][0]["value"] == "A0-B1-C2-D3-E4-F5-06-17"
    gateway = obs["extension"][0]["valueReference"]["reference"]  # MSH-3 names the gateway
    assert gateway != obs["device"]["reference"]


def test_each_row_names_its_own_device_and_gateway(convert: Converter) -> None:
    """oru._metric decides a device's role (equipment? gateway named?) once per device in a
    message: rows alternating between devices still each get their own."""
    own = "|||||||id^ns^A0B1C2D3E4F50617^EUI-64"
    gw = "|||||||id^ns^0011223344556677^EUI-64"  # MSH-3's gateway as the row's equipment
    tails = [own, gw, "", own, gw]
    rows = [f"OBX|{i}|NM|X{i}^local {i}^L||{70 + i}|/min^^UCUM|||||F{tail}"
            for i, tail in enumerate(tails, start=1)]
    result = convert(oru(*rows))
    assert result.refused is None and not result.errors, (result.refused, result.errors)
    devices = {f"Device/{d['id']}": d["identifier"][0]["value"] for d in result.of("Device")}
    seen = {o["code"]["coding"][0]["code"]: (
        devices[o["device"]["reference"]],
        [devices[e["valueReference"]["reference"]] for e in o.get("extension", [])])
        for o in result.of("Observation")}
    eui, gateway = "A0-B1-C2-D3-E4-F5-06-17", "00-11-22-33-44-55-66-77"
    assert seen == {"X1": (eui, [gateway]), "X2": (gateway, []), "X3": (gateway, []),
                    "X4": (eui, [gateway]), "X5": (gateway, [])}


def test_time_precedence_and_offsets(convert: Converter) -> None:
    # OBX-14 wins; without an offset it is read at MSH-7's offset (+0100).
    obs = one(convert, "OBX|1|NM|8867-4^HR^LN||72|/min^^UCUM|||||F|||20240105093000",
              obr7="20240105080000+0000")
    assert obs["effectiveDateTime"] == "2024-01-05T09:30:00+01:00"
    # no OBX-14: OBR-7 (with its own offset)
    obs = one(convert, "OBX|1|NM|8867-4^HR^LN||72|/min^^UCUM|||||F", obr7="20240105080000-0500")
    assert obs["effectiveDateTime"] == "2024-01-05T08:00:00-05:00"
    # neither: MSH-7
    obs = one(convert, "OBX|1|NM|8867-4^HR^LN||72|/min^^UCUM|||||F")
    assert obs["effectiveDateTime"] == "2024-01-05T10:00:00+01:00"


def test_default_time_zone_for_times_without_offset() -> None:
    paris = load_mapping_set(REPO / "mappings", ZoneInfo("Europe/Paris"))
    msg = parse_message(oru("OBX|1|NM|8867-4^HR^LN||72|/min^^UCUM|||||F",
                            msh7="20240705100000"))
    (m,) = paris.extract("hl7v2", msg).measurements
    assert m.time == datetime(2024, 7, 5, 8, 0, tzinfo=UTC)  # CEST, UTC+2


def test_same_message_twice_same_ids(convert: Converter) -> None:
    body = oru("OBX|1|NM|8867-4^HR^LN||72|/min^^UCUM|||||F",
               "OBX|2|NM|2345-7^Glucose^LN||99|mg/dL^^UCUM|||||F")
    first, second = convert(body), convert(oru(
        "OBX|1|NM|8867-4^HR^LN||72|/min^^UCUM|||||F",
        "OBX|2|NM|2345-7^Glucose^LN||99|mg/dL^^UCUM|||||F", ctl="OTHER-CONTROL-ID"))
    assert sorted(r["id"] for r in first.resources) == sorted(r["id"] for r in second.resources)


def test_loinc_passthrough_takes_the_catalogue_type(convert: Converter) -> None:
    obs = one(convert, "OBX|1|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||F")
    assert obs["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/heartrate"]
    assert obs["category"][0]["coding"][0]["code"] == "vital-signs"


def test_unknown_mdc_code_kept_as_sent(convert: Converter) -> None:
    obs = one(convert, "OBX|1|NM|99999^MDC_SOMETHING_NEW^MDC|1.0.0.9|5|262688^"
                       "MDC_DIM_PERCENT^MDC|||||F")
    assert obs["code"]["coding"] == [{"system": "urn:iso:std:iso:11073:10101", "code": "99999",
                                      "display": "MDC_SOMETHING_NEW"}]
    assert obs["valueQuantity"]["code"] == "%"


def test_bp_parts_with_different_status_stay_apart(convert: Converter) -> None:
    rows = ["OBX|1||150020^MDC_PRESS_BLD_NONINV^MDC|1.0.1|||||||F",
            "OBX|2|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.0.1.1|120|266016^MDC_DIM_MMHG^MDC"
            "|||||F",
            "OBX|3|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.0.1.2|80|266016^MDC_DIM_MMHG^MDC"
            "|||||{}"]
    together = convert(oru(*rows[:2], rows[2].format("F")))
    (panel,) = together.of("Observation")
    assert panel["code"]["coding"][0]["code"] == "85354-9"
    apart = convert(oru(*rows[:2], rows[2].format("C")))
    assert sorted(o["code"]["coding"][0]["code"] for o in apart.of("Observation")) == [
        "8462-4", "8480-6"]


def test_local_codes_through_the_sender_map(convert: Converter) -> None:
    msg = (b"MSH|^~\\&|HL7|CG3_SICU|CE|GH|20251014154001||ORU^R01|X1|P|2.3\r"
           b"PID|||10002^^^A^MR\rOBR|1||||||20251014154001\r"
           b"OBX|1|ST|HR||68|/min|||||R\rOBX|2|ST|CO2EX||28|mm(hg)|||||R\r")
    result = convert(msg)
    hr, co2 = result.of("Observation")
    assert {c["code"] for c in hr["code"]["coding"]} == {"8867-4", "HR"}
    assert hr["valueQuantity"]["value"] == 68 and hr["status"] == "preliminary"
    assert co2["valueQuantity"] == {"value": 28, "unit": "mm[Hg]",
                                    "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    assert "device" not in hr  # the sending system is not equipment


def test_mapping_files_every_row_cited() -> None:
    mapping_set = load_mapping_set(REPO / "mappings")
    assert mapping_set.hl7v2 is not None
    assert mapping_set.hl7v2.mdc["150021"].panel_input == "systolic"
    assert Path(REPO / "mappings/hl7v2/mdc.yaml").read_text().count("source: [") >= 40
