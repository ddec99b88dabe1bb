"""Every message of the third-party HL7v2 corpus converts, or is refused with a clear reason.

The lists below are the whole contract: a corpus file not named here must convert with no error
and yield at least one resource; a refused file must be refused with exactly the reason given
(the whole message), and a partial one must convert while reporting exactly those OBX problems.
Every reason names a place (segment/field, ``OBX[n]-field``) and quotes no value.
"""

from __future__ import annotations

import re

import pytest

from tests.hl7v2_fhir.conftest import Converter, corpus_files

UNSUPPORTED_TYPE = "MSH-9: unsupported message type"
REFUSED = {
    # Not a message type the hub takes (AR at the door).
    "hl7apy_edge_rsp-k22_v27_truncation-char.hl7": UNSUPPORTED_TYPE,
    "ipf_continua-wan_ack-AA.hl7": UNSUPPORTED_TYPE,
    "ipf_continua-wan_ack-invalid.hl7": UNSUPPORTED_TYPE,
    "ipf_edge_mdm-t01_v25-DEU_zsegment.hl7": UNSUPPORTED_TYPE,
    "ipf_edge_unknown-message-type-ABC-XYZ.hl7": UNSUPPORTED_TYPE,
    "ipf_pcd01_ack-AA.hl7": UNSUPPORTED_TYPE,
    "ipf_pcd01_ack-CE-error.hl7": UNSUPPORTED_TYPE,
    "ipf_pcd01_ack-invalid-version.hl7": UNSUPPORTED_TYPE,
    "ipf_adt-a10_v231.hl7": "MSH-9: unsupported trigger event",
    # Content the door refuses (AE).
    "ipf_edge_adt-a01_incomplete-no-pid.hl7": "PID: ADT without a PID segment",
    "msfc_edge_timezone-input.hl7": "PID: ADT without a PID segment",
    "pyhl7_edge_repetition-subcomponent.hl7": "OBX: ORU without an OBX segment",
    # Not tokenizable: MSH-2 written "^~\\&" (escape doubled) repeats a delimiter (AR).
    "lfh_edge_adt-a01_v26_unix-LF_double-escape-msh2.hl7":
        "MSH-2: encoding characters are not distinct",
    "lfh_edge_adt-a01_v26_windows-CRLF_double-escape-msh2.hl7":
        "MSH-2: encoding characters are not distinct",
    # A batch whose second segment precedes any MSH.
    "pyhl7_edge_bad-batch-missing-msh.hl7": "EVN: segment outside any message",
}
MISSING_CODE = "OBX-3 observation identifier is missing"
RP = "OBX-2 value type RP is not converted"
# Converted, with these rows refused (nothing else may fail).
PARTIAL = {
    "ipf_edge_oru-r01_v24_zsegments-repeated-obx5.hl7": [
        "OBX[1]-5: OBX-5 repeats, but NM holds one value"],
    "lfh_oru-r01_v26_multiline-mixed.hl7": [
        f"OBX[2]-3: {MISSING_CODE}", f"OBX[3]-3: {MISSING_CODE}", f"OBX[4]-3: {MISSING_CODE}"],
    "msfc_ORU-R01-01.hl7": [
        f"OBX[1]-2: {RP}", f"OBX[2]-3: {MISSING_CODE}", f"OBX[4]-2: {RP}",
        "OBX[5]-5: OBX-5 repeats, but NM holds one value"],
    "pyhl7_oru-r01_v24_glucose-SN-FN.hl7": ["OBX[2]-2: OBX-2 value type FN is not converted"],
}
# Every row refused: the message yields nothing (the pipeline records it as failed).
NOTHING = {
    "lfh_oru-r01_v26_multiline-tx.hl7": [
        f"OBX[1]-3: {MISSING_CODE}", f"OBX[2]-3: {MISSING_CODE}", f"OBX[3]-3: {MISSING_CODE}"],
}
FILES = corpus_files()


def test_the_lists_name_corpus_files_only() -> None:
    names = {p.name for p in FILES}
    assert set(REFUSED) | set(PARTIAL) | set(NOTHING) <= names
    assert len(FILES) == 73


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_corpus_message(path, convert: Converter) -> None:
    result = convert(path.read_bytes())
    name = path.name
    if name in REFUSED:
        assert result.refused is not None, "expected a refusal"
        assert result.refused.startswith(REFUSED[name]), result.refused
        return
    assert result.refused is None, result.refused
    expected = PARTIAL.get(name, NOTHING.get(name, []))
    assert len(result.errors) == len(expected), result.errors
    for error, wanted in zip(result.errors, expected, strict=True):
        assert error.startswith(wanted), error
    if name in NOTHING:
        assert not result.of("Observation")
    else:
        assert result.resources, "nothing converted"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_reasons_quote_no_values(path, convert: Converter) -> None:
    """Reasons name places, never data: no token of the message's field values appears."""
    result = convert(path.read_bytes())
    reasons = [result.refused] if result.refused else result.errors
    text = path.read_bytes().decode("latin-1")
    values = {v for v in re.split(r"[|^~&\r\n]", text) if len(v) >= 6 and not v.isupper()
              and not v.startswith(("MSH", "OBX", "MDC_"))}
    for reason in reasons:
        leaked = [v for v in values if v in reason]
        assert not leaked, f"reason quotes message content: {reason}"
