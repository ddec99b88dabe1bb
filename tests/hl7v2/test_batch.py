"""split_batch: FHS/BHS/BTS/FTS files, header-less message files, and refusals."""

from __future__ import annotations

import pytest

from hub.hl7v2 import ErrorCode, Hl7ParseError, parse_message, split_batch

from .conftest import CORPUS_HL7V2

M1 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A04|1|P|2.5\rPID|1||X\rZPD|z"
M2 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A04|2|P|2.5\rPID|1||Y"


def test_corpus_batch_file_has_three_messages() -> None:
    data = (CORPUS_HL7V2 / "pyhl7_edge_batch-file_FHS-BHS-3msgs.hl7").read_bytes()
    messages = split_batch(data)
    assert len(messages) == 3
    parsed = [parse_message(m) for m in messages]
    assert [m.control_id for m in parsed] == ["12334456778890", "12334456778891",
                                              "12334456778890"]
    assert all(m.message_type == "ADT" for m in parsed)
    assert [s.name for s in parsed[0].segments] == ["MSH", "EVN", "PID", "PD1", "NK1", "PV1"]


def test_corpus_batch_missing_msh_is_refused() -> None:
    data = (CORPUS_HL7V2 / "pyhl7_edge_bad-batch-missing-msh.hl7").read_bytes()
    with pytest.raises(Hl7ParseError) as info:
        split_batch(data)
    assert info.value.segment == "EVN"
    assert info.value.sequence == 2
    assert "outside any message" in info.value.reason


@pytest.mark.parametrize("sep", [b"\r", b"\n", b"\r\n"])
def test_full_batch_any_terminator(sep: bytes) -> None:
    data = sep.join([b"FHS|^~\\&", b"BHS|^~\\&", M1.replace(b"\r", sep), M2.replace(b"\r", sep),
                     b"BTS|2", b"FTS|1", b""])
    out = split_batch(b"\xef\xbb\xbf" + data)
    assert out == [M1 + b"\r", M2 + b"\r"]


def test_headerless_message_file() -> None:
    assert split_batch(M1 + b"\r" + M2 + b"\r") == [M1 + b"\r", M2 + b"\r"]
    assert split_batch(M1) == [M1 + b"\r"]


def test_empty_batch() -> None:
    assert split_batch(b"BHS|^~\\&\rBTS|0\r") == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"BHS|^~\\&\r" + M1 + b"\rBTS|5\r", "BTS-1 count is 5 but the batch holds 1"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + M1 + b"\rBTS|1\rFTS|3\r", "FTS-1 count is 3"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + M1 + b"\rBTS|1\rFTS|1\r" + M2, "after the file trailer"),
        (b"BHS|^~\\&\rFHS|^~\\&\r", "not the first segment"),
        (b"PID|1\r", "outside any message"),
        (b"", "no MSH"),
        (b"garbage\r", "malformed segment name"),
    ],
)
def test_refusals(data: bytes, reason: str) -> None:
    with pytest.raises(Hl7ParseError) as info:
        split_batch(data)
    assert reason in str(info.value)
    assert info.value.error_code is ErrorCode.SEGMENT_SEQUENCE_ERROR
