"""escape/unescape: the outbound safety rules (anchor case 17) and the round-trip property."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hub.hl7v2 import DEFAULT_ENCODING, EncodingChars, escape, parse_message, unescape

CUSTOM = EncodingChars("#", ":", "*", "!", "$", "%")
ENCODINGS = st.sampled_from([DEFAULT_ENCODING, DEFAULT_ENCODING._replace(truncation="#"), CUSTOM])


def test_delimiters_and_line_breaks_are_escaped() -> None:
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
    assert escape("l1\rl2\nl3\r\n") == "l1\\X0D\\l2\\X0A\\l3\\X0D\\\\X0A\\"
    assert escape("tab\tkept") == "tab\tkept"
    assert escape("\x0bframe\x1c") == "\\X0B\\frame\\X1C\\"
    assert escape("plain text") == "plain text"


def test_truncation_character_is_escaped_when_declared() -> None:
    assert escape("50#", DEFAULT_ENCODING) == "50#"
    assert escape("50#", DEFAULT_ENCODING._replace(truncation="#")) == "50\\P\\"


def test_custom_delimiters() -> None:
    assert escape("a#b:c$d*e!f%g", CUSTOM) == "a!F!b!S!c!T!d!R!e!E!f!P!g"
    assert unescape("a!F!b!S!c!T!d!R!e!E!f!P!g", CUSTOM) == "a#b:c$d*e!f%g"


def test_escaped_value_cannot_inject_segments_or_fields() -> None:
    hostile = "Smith|EVIL\rPID|1||INJECTED^^^X\nOBX|1"
    text = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rNTE|1||" + escape(hostile) + "\r"
    msg = parse_message(text)
    assert [s.name for s in msg.segments] == ["MSH", "NTE"]
    assert msg.get("NTE", 3) == hostile
    assert msg.segment("NTE") is not None
    assert msg.segments[1].field_count == 3


@given(st.text(), ENCODINGS)
@example("\\E\\", DEFAULT_ENCODING)
@example("\\X41\\ and \\.br\\", DEFAULT_ENCODING)
@example("\r\n\x00\x1c\x0b", DEFAULT_ENCODING)
def test_round_trip(text: str, enc: EncodingChars) -> None:
    escaped = escape(text, enc)
    assert unescape(escaped, enc) == text
    assert unescape(escaped, enc, "latin-1") == text
    assert "\r" not in escaped and "\n" not in escaped
    assert "\x0b" not in escaped and "\x1c" not in escaped
    delims = [enc.field, enc.component, enc.repetition, enc.subcomponent]
    if enc.truncation:
        delims.append(enc.truncation)
    assert not any(d in escaped for d in delims)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=50))
def test_round_trip_through_a_whole_message(text: str) -> None:
    head = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5||||||UNICODE UTF-8\r"
    data = (head + "OBX|1|ST|X||" + escape(text) + "\r").encode()
    assert parse_message(data).get("OBX", 5) == text


@pytest.mark.parametrize("charset", ["utf-8", "latin-1", "ascii"])
def test_unescape_control_hex_in_any_ascii_compatible_charset(charset: str) -> None:
    assert unescape("a\\X0D0A\\b", charset=charset) == "a\r\nb"
