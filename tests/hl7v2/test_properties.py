"""Fuzz-style properties: no input makes the tokenizer, batch splitter, ACK builder or MLLP
decoder raise anything but their documented errors (anchor case 9)."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.hl7v2 import (
    Frame,
    FramingError,
    Hl7ParseError,
    MllpDecoder,
    build_reject_ack,
    parse_message,
    split_batch,
)

from .conftest import pcd01_oru

HEADER = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5"
# Bytes biased towards what matters to a tokenizer: delimiters, terminators, BOMs, framing.
TOKENS = st.sampled_from([
    b"MSH", b"|", b"^", b"~", b"\\", b"&", b"#", b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf",
    b"\xff\xfe", b"\x00", b"\x0b", b"\x1c", b"OBX", b"PID", b"BHS", b"FHS", b"BTS|1", b"FTS",
    b"\\X", b"\\XZ", b"\\.br\\", b"\\H\\", b"\xc3", b"\xa4", b"8859/1", b"UNICODE UTF-8", b"A",
    b"1", b" ", b"Z",
])
HL7ISH = st.lists(TOKENS, max_size=60).map(b"".join)


def _tokenize_everything(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except Hl7ParseError as err:
        assert err.reason
    else:
        for seg in msg.segments:
            for n in range(1, seg.field_count + 2):
                seg.field(n)
                seg.component(n, 2)
                seg.subcomponent(n, 2, 2, rep=2)
                seg.text(n)
                for rep in seg.repetitions(n):
                    _ = rep.value, rep.text, rep.component(3)
    try:
        for part in split_batch(data):
            assert part.endswith(b"\r")
    except Hl7ParseError as err:
        assert err.reason
    assert build_reject_ack(data).startswith(b"MSH|^~\\&|")


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
@example(b"MSH|")
@example(b"MSH|^~\\&\r\n\n")
@example(b"\xff\xfe\x00")
def test_arbitrary_bytes_only_raise_hl7parseerror(data: bytes) -> None:
    _tokenize_everything(data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(HL7ISH)
def test_hl7_shaped_bytes_only_raise_hl7parseerror(data: bytes) -> None:
    _tokenize_everything(HEADER + data)
    _tokenize_everything(data)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_hl7parseerror(text: str) -> None:
    try:
        parse_message(text)
        parse_message("MSH|^~\\&|" + text)
    except Hl7ParseError:
        pass


@settings(max_examples=300)
@given(st.data())
def test_mutated_corpus_message_only_raises_hl7parseerror(data: st.DataObject) -> None:
    base = bytearray(pcd01_oru())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    _tokenize_everything(bytes(base))


def _decode(stream: bytes, cuts: list[int], cap: int) -> list[Frame | FramingError]:
    decoder = MllpDecoder(max_frame_bytes=cap)
    out: list[Frame | FramingError] = []
    last = 0
    for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
        out.extend(decoder.feed(stream[last:cut]))
        last = cut
    out.extend(decoder.close())
    return out


MLLP_TOKENS = st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\n", b"\x00", b"MSH|x", b"abc",
                               b"\x0bMSH|ok\x1c\r", b"\x1c\r"])
MLLP_STREAMS = st.one_of(st.binary(max_size=300),
                         st.lists(MLLP_TOKENS, max_size=40).map(b"".join))


@settings(max_examples=1000)
@given(MLLP_STREAMS, st.lists(st.integers(min_value=0), max_size=10),
       st.integers(min_value=1, max_value=64))
def test_mllp_decoder_never_raises_and_ignores_chunking(
    stream: bytes, cuts: list[int], cap: int
) -> None:
    whole = _decode(stream, [], cap)
    assert _decode(stream, cuts, cap) == whole
    for item in whole:
        if isinstance(item, Frame):
            assert len(item.payload) <= cap
            assert b"\x0b" not in item.payload and b"\x1c" not in item.payload
        else:
            assert item.size > 0 and item.reason


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=50).filter(lambda b: b"\x0b" not in b and b"\x1c" not in b),
                max_size=8),
       st.lists(st.integers(min_value=0), max_size=10))
def test_mllp_framed_payloads_come_back_intact(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(b"\x0b" + p + b"\x1c\r" for p in payloads)
    assert _decode(stream, cuts, 1000) == [Frame(p) for p in payloads]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(HL7ISH, st.integers(min_value=1, max_value=30))
@example(HEADER + b"\rOBX|1|NM|x^y^MDC||72", 21)
def test_raw_fields_reads_what_raw_reads(data: bytes, count: int) -> None:
    """``Segment.raw_fields`` (the ORU mapping's one read of an OBX) is ``raw`` field by field."""
    try:
        msg = parse_message(data)
    except Hl7ParseError:
        return
    for seg in msg.segments:
        fields = seg.raw_fields(count)
        assert len(fields) == count
        assert fields[1:] == [seg.raw(n) for n in range(1, count)]
        fields[-1] = "changed"  # a copy: the segment is untouched
        assert seg.raw(count - 1) != "changed"
