"""Every corpus message parses (or is refused with a clear reason), and agrees with python-hl7."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest

from hub.hl7v2 import Hl7ParseError, Message, check_header, parse_message, split_batch

from .conftest import CORPUS_HL7V2, corpus_files

# The only files we refuse, with the reason we give. Everything else must parse.
EXPECTED_REFUSALS = {
    # MSH-2 is "^~\\&" (a Java string escape left in the file): 5 characters, "\" twice. The
    # delimiters must be distinct, and guessing which one was meant could mis-split the data.
    "lfh_edge_adt-a01_v26_unix-LF_double-escape-msh2.hl7": "not distinct",
    "lfh_edge_adt-a01_v26_windows-CRLF_double-escape-msh2.hl7": "not distinct",
    # A batch whose first message lost its MSH: the EVN/PID... belong to no message.
    "pyhl7_edge_bad-batch-missing-msh.hl7": "outside any message",
}
FILES = corpus_files()


def test_corpus_is_present_and_complete() -> None:
    assert CORPUS_HL7V2.is_dir(), f"missing corpus folder {CORPUS_HL7V2}"
    assert len(FILES) >= 73
    names = {p.name for p in FILES}
    assert set(EXPECTED_REFUSALS) <= names


def _messages(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if data.lstrip(b"\xef\xbb\xbf \r\n")[:3] in (b"FHS", b"BHS"):
        return split_batch(data)
    return [data]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_corpus_file_parses_or_is_refused_clearly(path: Path) -> None:
    expected_refusal = EXPECTED_REFUSALS.get(path.name)
    try:
        parsed = [parse_message(m) for m in _messages(path)]
    except Hl7ParseError as err:
        assert expected_refusal is not None, f"unexpected refusal: {err}"
        assert expected_refusal in err.reason
        assert err.sequence is not None or err.field is not None  # it says where
        return
    assert expected_refusal is None, "expected a refusal"
    for msg in parsed:
        assert msg.msh.name == "MSH"
        assert msg.version.startswith("2.")
        check_header(msg)
        for seg in msg.segments:
            assert len(seg.name) == 3
            for n in range(1, seg.field_count + 1):
                seg.field(n)  # every value can be read
                for rep in seg.repetitions(n):
                    rep.text  # noqa: B018


def _python_hl7(data: bytes, msg: Message) -> hl7.Message:
    text = data.decode(msg.charset).lstrip("\ufeff")
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return hl7.parse(text)


COMPARABLE = [p for p in FILES if p.name not in EXPECTED_REFUSALS and _messages(p) == [
    p.read_bytes()]]


@pytest.mark.parametrize("path", COMPARABLE, ids=[p.name for p in COMPARABLE])
def test_fields_agree_with_python_hl7(path: Path) -> None:
    data = path.read_bytes()
    ours = parse_message(data)
    theirs = _python_hl7(data, ours)
    assert len(theirs) == len(ours.segments)
    for seg, their_seg in zip(ours.segments, theirs, strict=True):
        assert seg.name == str(their_seg[0])
        assert seg.field_count == len(their_seg) - 1
        for n in range(1, seg.field_count + 1):
            assert seg.raw(n) == str(their_seg[n]), f"{seg.name}-{n}"


@pytest.mark.parametrize(
    ("name", "seg", "fld", "rep", "comp", "sub", "expected"),
    [
        ("ipf_pcd01_bp-request.hl7", "OBX", 5, 1, 1, 1, ""),
        ("ipf_pcd01_bp-request.hl7", "OBX", 3, 1, 2, 1, "MDC_DEV_SPEC_PROFILE_BP"),
        ("ipf_pcd01_bp-request.hl7", "MSH", 10, 1, 1, 1, "MSGID1234"),
        ("ipf_pcd01_icu-monitor-request.hl7", "OBX", 6, 1, 1, 1, "/min"),
        ("ipf_adt-a01_v231_maximal-repeats.hl7", "PID", 3, 2, 4, 2, None),
        ("pyhl7_adt-a01_v23_quoted-nulls-repeats.hl7", "PID", 3, 2, 1, 1, None),
        ("msfc_LRI_2.0-NG_CBC_Typ_Message.hl7", "OBX", 3, 1, 2, 1, None),
        ("ipf_edge_mdm-t01_v25-DEU_zsegment.hl7", "PID", 11, 1, 1, 2, None),
        ("ipf_oru-r01_v25_glucose-SN.hl7", "OBX", 5, 1, 2, 1, None),
        ("gcphdh_oru-r01_v23_icu-monitor-vitals-local-codes.hl7", "OBX", 3, 1, 1, 1, "HR"),
    ],
)
def test_selected_values_agree_with_python_hl7(
    name: str, seg: str, fld: int, rep: int, comp: int, sub: int, expected: str | None
) -> None:
    data = (CORPUS_HL7V2 / name).read_bytes()
    ours = parse_message(data)
    theirs = _python_hl7(data, ours)
    their_value = theirs.unescape(str(theirs[f"{seg}.F{fld}.R{rep}.C{comp}.S{sub}"]))
    our_value = ours.get(seg, fld, comp, sub, rep)
    assert our_value == their_value
    if expected is not None:
        assert our_value == expected
