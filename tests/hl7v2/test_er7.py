"""Unit tests of the ER7 tokenizer: numbering, delimiters, escapes, terminators, charsets."""

from __future__ import annotations

import pytest

from hub.hl7v2 import (
    ErrorCode,
    Hl7ParseError,
    check_header,
    parse_message,
)

from .conftest import CORPUS_HL7V2

MSH = ("MSH|^~\\&|SendApp|SendFac|RecvApp|RecvFac|20240102030405+0100||ORU^R01^ORU_R01|CTRL-1|P|"
       "2.5.1")


def test_msh_numbering_is_hl7s(oru: bytes) -> None:
    msg = parse_message(oru)
    msh = msg.msh
    assert msh.field(1) == "|"
    assert msh.field(2) == "^~\\&"
    assert msh.raw(2) == "^~\\&"
    assert msh.component(3, 1) == "AcmeInc"
    assert msh.component(3, 2) == "ACDE48234567ABCD"
    assert msh.field(7) == "20090713090030+0500"
    assert msg.get("MSH", 9) == "ORU"
    assert msg.get("MSH", 9, 2) == "R01"
    assert msg.get("MSH", 10) == "MSGID1234"
    assert msg.get("MSH", 12) == "2.6"
    assert (msg.message_type, msg.trigger_event, msg.control_id, msg.version) == (
        "ORU", "R01", "MSGID1234", "2.6")
    # MSH-1/MSH-2 are never split, even though they contain the delimiters
    assert msh.component(2, 2) == ""
    assert [r.value for r in msh.repetitions(2)] == ["^~\\&"]
    assert msh.er7.startswith("MSH|^~\\&|AcmeInc^")


def test_other_segments_count_from_the_first_field(oru: bytes) -> None:
    msg = parse_message(oru)
    obx = msg.segments_named("OBX")
    assert len(obx) == 6
    assert [o.field(1) for o in obx] == ["1", "2", "3", "4", "5", "6"]
    assert obx[2].field(5) == "120"
    assert obx[2].component(3, 2) == "MDC_PRESS_BLD_NONINV_SYS"
    assert obx[2].component(6, 2) == "MDC_DIM_MMHG"
    assert obx[0].field(18) == "0123456789ABCDEF"
    assert obx[0].component(18, 2) == "EUI-64"
    assert obx[2].sequence == 6
    assert msg.get("OBX", 5) == ""  # first OBX is the device row, no value
    assert msg.get("ZZZ", 1) == ""
    assert msg.segment("ZZZ") is None


def test_absent_positions_are_empty_and_positions_are_1_based() -> None:
    msg = parse_message(MSH + "\rPID|1||A^B&C~D\r")
    pid = msg.segment("PID")
    assert pid is not None
    assert pid.field(40) == ""
    assert pid.component(3, 9) == ""
    assert pid.subcomponent(3, 2, 5) == ""
    assert pid.field(3, rep=3) == ""
    assert pid.field_count == 3
    with pytest.raises(IndexError):
        pid.field(0)
    with pytest.raises(IndexError):
        pid.component(3, 0)


def test_repetitions_components_subcomponents() -> None:
    msg = parse_message(MSH + "\rPID|1||ID1^^^HOSP&1.2.3&ISO^MR~ID2^^^SSA^SS||Doe^John\r")
    pid = msg.segment("PID")
    assert pid is not None
    reps = pid.repetitions(3)
    assert [r.value for r in reps] == ["ID1", "ID2"]
    assert reps[0].subcomponent(4, 2) == "1.2.3"
    assert reps[0].component(4) == "HOSP"
    assert reps[1].component(5) == "SS"
    assert pid.field(3, rep=2) == "ID2"
    assert pid.subcomponent(3, 4, 3) == "ISO"
    assert pid.component(5, 2) == "John"
    assert pid.repetitions(4) == []
    assert pid.raw(3) == "ID1^^^HOSP&1.2.3&ISO^MR~ID2^^^SSA^SS"


def test_corpus_repetition_subcomponent_sample() -> None:
    msg = parse_message((CORPUS_HL7V2 / "pyhl7_edge_repetition-subcomponent.hl7").read_bytes())
    pid = msg.segment("PID")
    assert pid is not None
    assert pid.field(1) == "Field1"
    assert pid.component(2, 2) == "Component2"
    assert pid.subcomponent(3, 2, 2) == "Sub-Component2"
    assert pid.component(3, 3) == "Component3"
    assert [r.value for r in pid.repetitions(4)] == ["Repeat1", "Repeat2"]


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("\\H\\bold\\N\\", "bold"),
        ("caf\\XC3A9\\", "café"),
        ("cr\\X0D\\lf\\X0A\\", "cr\rlf\n"),
        ("keep \\Zlocal\\ as is", "keep \\Zlocal\\ as is"),
        ("\\.sp2\\ unknown formatting", "\\.sp2\\ unknown formatting"),
        ("bad hex \\XZZ\\", "bad hex \\XZZ\\"),
        ("odd hex \\X0\\", "odd hex \\X0\\"),
        ("unterminated \\F", "unterminated \\F"),
        ("C:\\dir\\file", "C:\\dir\\file"),
    ],
)
def test_escape_sequences_are_decoded(escaped: str, plain: str) -> None:
    msg = parse_message(MSH + f"\rNTE|1||{escaped}\r")
    assert msg.get("NTE", 3) == plain


def test_hex_escapes_follow_the_message_charset() -> None:
    latin = (MSH + "||||||8859/1\rNTE|1||\\XE4\\\r").encode("latin-1")
    assert parse_message(latin).get("NTE", 3) == "ä"
    utf8 = (MSH + "||||||UNICODE UTF-8\rNTE|1||\\XC3A4\\|\\XE4\\\r").encode()
    msg = parse_message(utf8)
    assert msg.get("NTE", 3) == "ä"
    assert msg.get("NTE", 4) == "\\XE4\\"  # not valid UTF-8: kept literally


def test_escapes_are_decoded_after_splitting() -> None:
    msg = parse_message(MSH + "\rOBX|1|ST|X||a\\S\\b^c\\T\\d&e\r")
    obx = msg.segment("OBX")
    assert obx is not None
    assert obx.component(5, 1) == "a^b"
    assert obx.subcomponent(5, 2, 1) == "c&d"
    assert obx.subcomponent(5, 2, 2) == "e"
    assert obx.text(5) == "a^b^c&d&e"  # whole value, separators kept
    assert obx.raw(5) == "a\\S\\b^c\\T\\d&e"


def test_custom_encoding_characters() -> None:
    text = "MSH#:*!$#App#Fac#R#F#20240101##ORU:R01#ID!S!7#P#2.5\rOBX#1#ST#A:B$C#1#x!F!y*z:w\r"
    msg = parse_message(text)
    enc = msg.encoding
    assert (enc.field, enc.component, enc.repetition, enc.escape, enc.subcomponent) == (
        "#", ":", "*", "!", "$")
    assert msg.get("MSH", 1) == "#"
    assert msg.get("MSH", 2) == ":*!$"
    assert msg.get("MSH", 9, 2) == "R01"
    assert msg.control_id == "ID:7"  # !S! is this message's component separator, escaped
    obx = msg.segment("OBX")
    assert obx is not None
    assert obx.subcomponent(3, 2, 2) == "C"
    assert obx.field(5) == "x#y"
    assert obx.field(5, rep=2) == "z"
    assert obx.component(5, 2, rep=2) == "w"


def test_truncation_character_v27() -> None:
    msg = parse_message((CORPUS_HL7V2 / "hl7apy_edge_rsp-k22_v27_truncation-char.hl7").read_bytes())
    assert msg.encoding.truncation == "#"
    assert msg.get("MSH", 2) == "^~\\&#"
    assert msg.get("MSH", 3) == "SEND APP"
    assert msg.version == "2.7"
    assert msg.get("PID", 5, 2) == "SMITH"
    assert parse_message(MSH.replace("^~\\&", "^~\\&#") + "\rNTE|1||a\\P\\b\r").get(
        "NTE", 3) == "a#b"


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
def test_segment_terminators(terminator: str) -> None:
    text = terminator.join([MSH, "PID|1||X", "OBX|1|NM|HR||72", ""])
    msg = parse_message(text.encode())
    assert [s.name for s in msg.segments] == ["MSH", "PID", "OBX"]
    assert msg.get("OBX", 5) == "72"
    assert msg.get("MSH", 12) == "2.5.1"


def test_lf_inside_a_cr_terminated_message_stays_data() -> None:
    msg = parse_message(MSH + "\rOBX|1|TX|NOTE||line one\nline two\nOBX|2|NM|HR||72\r")
    obx = msg.segments_named("OBX")
    assert [o.field(1) for o in obx] == ["1", "2"]
    assert obx[0].field(5) == "line one\nline two"


def test_blank_lines_and_trailing_whitespace_are_ignored() -> None:
    msg = parse_message("\r\n" + MSH + "\r\n\r\nPID|1\r\n\r\n   \r\n")
    assert [s.name for s in msg.segments] == ["MSH", "PID"]


def test_utf8_bom_is_stripped() -> None:
    msg = parse_message(b"\xef\xbb\xbf" + (MSH + "\rPID|1||X\r").encode())
    assert msg.msh.name == "MSH"
    assert msg.get("PID", 3) == "X"
    assert parse_message("\ufeff" + MSH).control_id == "CTRL-1"


def test_utf16_with_bom() -> None:
    msg = parse_message((MSH + "\rPID|1||Zoë\r").encode("utf-16"))
    assert msg.get("PID", 3) == "Zoë"


def test_z_segments_are_kept() -> None:
    msg = parse_message(MSH + "\rZPD|1|custom^value\rZ01|x\r")
    assert msg.get("ZPD", 2, 2) == "value"
    assert msg.get("Z01", 1) == "x"


def test_explicit_null_is_returned_literally() -> None:
    msg = parse_message(MSH + '\rPID|1||""\r')
    assert msg.get("PID", 3) == '""'


class TestCharsets:
    def test_undeclared_utf8(self) -> None:
        msg = parse_message((CORPUS_HL7V2 / "ipf_adt-a01_v22_utf8.hl7").read_bytes())
        assert msg.charset == "utf-8"
        assert msg.charset_guessed
        assert msg.get("PID", 5) == "Nächname"
        assert msg.get("PID", 5, 2) == "Vörname"

    def test_undeclared_latin1_corpus_file(self) -> None:
        msg = parse_message((CORPUS_HL7V2 / "ipf_adt-a40_v231_iso-8859-1.hl7").read_bytes())
        assert msg.charset == "latin-1"
        assert msg.charset_guessed
        assert msg.get("MSH", 5) == "BLÄH"
        assert msg.get("MSH", 6) == "BLÖÖÖH-1"

    def test_declared_8859_1(self) -> None:
        data = (MSH + "||||||8859/1\rPID|1||||Müller\r").encode("latin-1")
        msg = parse_message(data)
        assert (msg.charset, msg.charset_guessed) == ("latin-1", False)
        assert msg.get("PID", 5) == "Müller"

    def test_declared_utf8(self) -> None:
        data = (MSH + "||||||UNICODE UTF-8\rPID|1||||Müller\r").encode()
        msg = parse_message(data)
        assert (msg.charset, msg.charset_guessed) == ("utf-8", False)
        assert msg.get("PID", 5) == "Müller"

    def test_declared_utf8_with_invalid_bytes_is_refused(self) -> None:
        data = (MSH + "||||||UNICODE UTF-8\rPID|1||||Müller\r").encode("latin-1")
        with pytest.raises(Hl7ParseError) as info:
            parse_message(data)
        assert (info.value.segment, info.value.field) == ("MSH", 18)
        assert "Müller" not in str(info.value)

    def test_ascii_label_with_utf8_bytes_falls_back(self) -> None:
        msg = parse_message((MSH + "||||||ASCII\rPID|1||||Müller\r").encode())
        assert (msg.charset, msg.charset_guessed) == ("utf-8", True)
        assert msg.get("PID", 5) == "Müller"

    def test_explicit_charset_override(self) -> None:
        data = (MSH + "||||||UNICODE UTF-8\rPID|1||||Müller\r").encode("latin-1")
        assert parse_message(data, charset="latin-1").get("PID", 5) == "Müller"

    def test_unknown_charset_value_uses_the_default(self) -> None:
        msg = parse_message((CORPUS_HL7V2 / "ipf_edge_oru-r01_v24_zsegments-repeated-obx5.hl7")
                            .read_bytes())
        assert msg.charset_guessed

    def test_other_declared_charsets(self) -> None:
        data = (MSH + "||||||8859/5\rPID|1||||Иванов\r").encode("iso8859-5")
        assert parse_message(data).get("PID", 5) == "Иванов"
        data = (MSH + "||||||GB 18030-2000\rPID|1||||张三\r").encode("gb18030")
        assert parse_message(data).get("PID", 5) == "张三"


@pytest.mark.parametrize(
    ("data", "reason_part", "code"),
    [
        (b"", "empty", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"  \r\n", "empty", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"PID|1||X\r", "does not start with an MSH", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"MSH", "ends before its field separator", ErrorCode.DATA_TYPE_ERROR),
        (b"MSH|^~\r", "4 or 5 characters", ErrorCode.DATA_TYPE_ERROR),
        (b"MSH|^~\\\\&|A\r", "not distinct", ErrorCode.DATA_TYPE_ERROR),
        (b"MSHA^~\\&A\r", "letter, digit", ErrorCode.DATA_TYPE_ERROR),
        (b"MSH|^~\\&|A\rpid|1\r", "malformed segment name", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"MSH|^~\\&|A\rPIDX|1\r", "malformed segment name", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"MSH|^~\\&|A\rMSH|^~\\&|B\r", "second MSH", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"BHS|^~\\&\rMSH|^~\\&|A\rBTS|1\r", "batch", ErrorCode.SEGMENT_SEQUENCE_ERROR),
    ],
)
def test_refusals_have_clear_reasons(data: bytes, reason_part: str, code: ErrorCode) -> None:
    with pytest.raises(Hl7ParseError) as info:
        parse_message(data)
    assert reason_part in info.value.reason
    assert info.value.error_code is code


def test_error_positions_and_no_values_in_messages() -> None:
    with pytest.raises(Hl7ParseError) as info:
        parse_message(MSH + "\rPID|1||SECRET-MRN\rsecret line with PHI\r")
    err = info.value
    assert err.sequence == 3
    assert err.segment is None  # a malformed name is not quoted back
    assert "SECRET" not in str(err) and "secret" not in str(err) and "PHI" not in str(err)
    assert "segment #3" in str(err)


def test_check_header_requires_the_essentials() -> None:
    check_header(parse_message(MSH))
    with pytest.raises(Hl7ParseError) as info:
        check_header(parse_message("MSH|^~\\&|A|B|C|D|20240101||ORU^R01||P|2.5"))
    assert (info.value.segment, info.value.field) == ("MSH", 10)
    assert info.value.error_code is ErrorCode.REQUIRED_FIELD_MISSING


def test_repr_never_shows_values() -> None:
    msg = parse_message(MSH + "\rPID|1||SECRET\r")
    pid = msg.segment("PID")
    assert pid is not None
    assert "SECRET" not in repr(msg) + repr(pid) + repr(pid.repetitions(3)[0])
