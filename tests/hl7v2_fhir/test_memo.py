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
