"""The mapping engine's memo (``containment.memo``): lookups cached by field text must give
exactly what they give uncached, whoever sends the text, and stay bounded."""

from __future__ import annotations

from tests.hl7v2_fhir.conftest import Converter


def icu_oru(facility: str, ctrl: str) -> bytes:
    return (f"MSH|^~\\&|HL7|{facility}|CE|GH|20251014154001||ORU^R01|{ctrl}|P|2.3\r"
            "PID|1||MRN-9^^^H^MR\rOBR|1||||||20251014154001\r"
            "OBX|1|ST|HR^HR||71|/min|||||F\r").encode()


def _codes(result) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    (obs,) = result.of("Observation")
    return {(c["system"], c["code"]) for c in obs["code"]["coding"]}


def test_the_same_text_from_another_sender_is_looked_up_for_that_sender(
        convert: Converter) -> None:
    mapped = _codes(convert(icu_oru("CG3_SICU", "M1")))  # icu-monitor-cg3.yaml: HR → LOINC
    other = _codes(convert(icu_oru("OTHER_WARD", "M2")))  # no sender map: kept as sent
    again = _codes(convert(icu_oru("CG3_SICU", "M3")))
    assert ("http://loinc.org", "8867-4") in mapped and mapped == again
    assert ("http://loinc.org", "8867-4") not in other
    assert other == {("urn:iomt-fhir-hub:hl7v2:local:OTHER_WARD", "HR")}


def test_a_cleared_memo_gives_the_same_result(convert: Converter) -> None:
    first = convert(icu_oru("CG3_SICU", "M4"))
    memo = convert.hub.mappings().hl7v2.memo
    assert memo  # the run above filled it
    memo.clear()  # what happens when it is full (containment.MEMO_LIMIT)
    second = convert(icu_oru("CG3_SICU", "M5"))
    assert memo and _codes(first) == _codes(second)
    assert [o["valueQuantity"] for o in first.of("Observation")] == [
        o["valueQuantity"] for o in second.of("Observation")]


def _lab_oru(msh21: str, ctrl: str) -> bytes:
    return (f"MSH|^~\\&|LAB|WARD9|CE|GH|20251014154001||ORU^R01|{ctrl}|P|2.6|||||||||{msh21}\r"
            "PID|1||MRN-9^^^H^MR\rOBR|1||F1^LAB|2345-7^Glucose^LN|||20251014154001\r"
            "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F\r").encode()


def test_the_pcd01_profile_decision_follows_msh21_text(convert: Converter) -> None:
    """MSH-21 naming IHE PCD-01 drops the DiagnosticReport (report._declares_pcd01, memoised
    on the field's text): each text decides for itself, first seen or not."""
    pcd = "IHE PCD ORU-R01 2006^HL7^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
    for round_ in range(2):
        assert convert(_lab_oru("", f"L{round_}")).of("DiagnosticReport")
        assert not convert(_lab_oru(pcd, f"P{round_}")).of("DiagnosticReport")
        assert not convert(_lab_oru("X^^1.3.6.1.4.1.19376.1.6.1.1.1", f"Q{round_}")
                           ).of("DiagnosticReport")
        assert convert(_lab_oru("X^^1.3.6.1.4.1.19376.1.6.1.1.2", f"R{round_}")
                       ).of("DiagnosticReport")
