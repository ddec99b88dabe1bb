"""MllpDecoder and frame(): the framing torture cases of anchor case 8, without sockets."""

from __future__ import annotations

import pytest

from hub.hl7v2 import Frame, FramingError, FramingErrorKind, MllpDecoder, frame

MSG = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|ID1|P|2.5\rPID|1\r"


def kinds(items: list[Frame | FramingError]) -> list[str]:
    return ["frame" if isinstance(i, Frame) else i.kind.value for i in items]


def test_frame_wraps_and_refuses_block_characters() -> None:
    assert frame(b"abc") == b"\x0babc\x1c\r"
    with pytest.raises(ValueError, match="block character"):
        frame(b"a\x1cb")
    with pytest.raises(ValueError, match="block character"):
        frame(b"a\x0bb")


def test_several_messages_in_one_read() -> None:
    out = MllpDecoder().feed(frame(MSG) + frame(b"two") + frame(b"three"))
    assert out == [Frame(MSG), Frame(b"two"), Frame(b"three")]


def test_message_split_across_reads_byte_by_byte() -> None:
    decoder = MllpDecoder()
    data = frame(MSG)
    out: list[Frame | FramingError] = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
    assert out == [Frame(MSG)]
    assert not decoder.in_frame


def test_nulls_and_garbage_between_frames_are_reported_and_skipped() -> None:
    decoder = MllpDecoder()
    out = decoder.feed(b"\x00\x00junk" + frame(b"one") + b"\x00" * 3 + frame(b"two"))
    assert kinds(out) == ["garbage", "frame", "garbage", "frame"]
    garbage = [i for i in out if isinstance(i, FramingError)]
    assert [g.size for g in garbage] == [6, 3]
    assert "6 bytes" in garbage[0].reason


def test_crlf_after_end_block_is_silent() -> None:
    out = MllpDecoder().feed(frame(b"one") + b"\n" + frame(b"two") + b"\r\n")
    assert out == [Frame(b"one"), Frame(b"two")]


def test_end_block_without_cr_is_accepted() -> None:
    out = MllpDecoder().feed(b"\x0bone\x1c\x0btwo\x1c")
    assert out == [Frame(b"one"), Frame(b"two")]


def test_cr_after_end_block_in_the_next_read_is_consumed() -> None:
    decoder = MllpDecoder()
    assert decoder.feed(b"\x0bone\x1c") == [Frame(b"one")]
    assert decoder.feed(b"\r\x0btwo\x1c\r") == [Frame(b"two")]


def test_missing_end_block_is_reported_when_the_next_frame_starts() -> None:
    out = MllpDecoder().feed(b"\x0b" + MSG + frame(b"next"))
    assert kinds(out) == ["unterminated", "frame"]
    err = out[0]
    assert isinstance(err, FramingError)
    assert err.size == len(MSG) and err.head == MSG
    assert out[1] == Frame(b"next")


def test_partial_frame_at_end_of_stream() -> None:
    decoder = MllpDecoder()
    assert decoder.feed(b"\x0b" + MSG[:10]) == []
    assert decoder.in_frame
    assert kinds(list(decoder.close())) == ["unterminated"]
    assert not decoder.in_frame


def test_oversize_frame_is_reported_once_then_skipped_until_the_next_frame() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    big = b"MSH|^~\\&|A|B|C|D|x||ORU^R01|BIG|P|2.5\r" + b"X" * 500
    out: list[Frame | FramingError] = []
    stream = frame(big) + frame(b"small")
    for i in range(0, len(stream), 37):
        out.extend(decoder.feed(stream[i : i + 37]))
    assert kinds(out) == ["oversize", "frame"]
    err = out[0]
    assert isinstance(err, FramingError) and err.kind is FramingErrorKind.OVERSIZE
    assert err.head == big[:101]
    assert out[1] == Frame(b"small")


def test_frame_exactly_at_the_cap_is_accepted() -> None:
    assert MllpDecoder(max_frame_bytes=5).feed(frame(b"12345")) == [Frame(b"12345")]
    assert kinds(MllpDecoder(max_frame_bytes=5).feed(frame(b"123456"))) == ["oversize"]


def test_stray_start_blocks_are_garbage() -> None:
    out = MllpDecoder().feed(b"\x0b\x0b" + MSG + b"\x1c\r")
    assert kinds(out) == ["garbage", "frame"]


def test_empty_frame_is_a_frame() -> None:
    assert MllpDecoder().feed(b"\x0b\x1c\r") == [Frame(b"")]


def test_invalid_cap() -> None:
    with pytest.raises(ValueError, match="positive"):
        MllpDecoder(max_frame_bytes=0)
