"""HL7v2 escape sequences: ``escape`` for building outbound values, ``unescape`` for reading.

Escaping is what keeps data from becoming structure: an unescaped ``|`` in a name starts a new
field, an unescaped CR starts a new segment (anchor case 17, "HL7 injection").

Choice for line breaks: ``escape`` writes CR and LF as ``\\X0D\\`` and ``\\X0A\\``, not
``\\.br\\``. The hex form is defined for every text data type (ST, TX, FT, CWE text...), whereas
``\\.br\\`` is a formatting command that only FT fields are required to honour; and it keeps CR,
LF and CRLF distinct, so ``unescape(escape(s)) == s`` holds exactly. ``unescape`` still turns
an inbound ``\\.br\\`` into ``"\\n"``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from hub.hl7v2.encoding import DEFAULT_ENCODING, EncodingChars

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def escape(text: str, enc: EncodingChars = DEFAULT_ENCODING) -> str:
    """Return ``text`` as an ER7 value that is safe to place in one (sub)component.

    Contract: the result contains none of the message's delimiters except inside escape
    sequences, and no C0 control character other than TAB (so no CR, LF, or the MLLP framing
    bytes 0x0B/0x1C); ``unescape(escape(s, enc), enc, charset)`` returns ``s`` for every string
    and every ASCII-compatible charset. Delimiters become ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and
    ``\\P\\`` for the v2.7 truncation character); other control characters become ``\\Xhh\\``.
    """
    pattern = _special_chars(enc)
    if pattern.search(text) is None:
        return text  # fast path: most values are plain
    e = enc.escape
    table = {
        enc.escape: f"{e}E{e}",
        enc.field: f"{e}F{e}",
        enc.component: f"{e}S{e}",
        enc.subcomponent: f"{e}T{e}",
        enc.repetition: f"{e}R{e}",
    }
    if enc.truncation is not None:
        table[enc.truncation] = f"{e}P{e}"

    def replace(m: re.Match[str]) -> str:
        ch = m.group()
        return table.get(ch) or f"{e}X{ord(ch):02X}{e}"

    return pattern.sub(replace, text)


@lru_cache(maxsize=32)
def _special_chars(enc: EncodingChars) -> re.Pattern[str]:
    # The delimiters plus every C0 control character except TAB.
    delims = "".join(c for c in enc if c is not None)
    return re.compile("[\\x00-\\x08\\x0a-\\x1f" + re.escape(delims) + "]")


def unescape(text: str, enc: EncodingChars = DEFAULT_ENCODING, charset: str = "utf-8") -> str:
    """Decode the escape sequences of one (sub)component value.

    - ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and ``\\P\\`` when MSH-2 declares a truncation
      character) become the delimiter they stand for.
    - ``\\Xhh...\\`` becomes those bytes decoded with ``charset`` (the message's codec), so
      ``\\XC3A4\\`` is "ä" in a UTF-8 message and ``\\XE4\\`` is "ä" in a Latin-1 one.
    - ``\\.br\\`` becomes ``"\\n"``; highlighting ``\\H\\`` and ``\\N\\`` is dropped.
    - Anything else is kept literally, including the escape characters: unknown or
      locally-defined sequences (``\\Z..\\``, charset switches ``\\C..\\``/``\\M..\\``, other
      formatting commands such as ``\\.sp\\``), malformed hex, hex bytes invalid in
      ``charset``, and an escape character with no closing partner. Dropping them would lose
      data; guessing would invent it.

    Call it on a value already split out of its field: unescaping before splitting would turn
    ``\\S\\`` into a component separator.
    """
    e = enc.escape
    start = text.find(e)
    if start < 0:
        return text  # fast path: no escape character at all
    out: list[str] = []
    pos = 0
    n = len(text)
    while start >= 0:
        end = text.find(e, start + 1)
        if end < 0:
            break  # an unterminated escape: the rest is literal
        out.append(text[pos:start])
        out.append(_decode_sequence(text[start + 1 : end], enc, charset))
        pos = end + 1
        start = text.find(e, pos) if pos < n else -1
    out.append(text[pos:])
    return "".join(out)


def _decode_sequence(seq: str, enc: EncodingChars, charset: str) -> str:
    if len(seq) == 1:
        simple = {
            "F": enc.field,
            "S": enc.component,
            "T": enc.subcomponent,
            "R": enc.repetition,
            "E": enc.escape,
            "H": "",
            "N": "",
        }.get(seq)
        if simple is not None:
            return simple
        if seq == "P" and enc.truncation is not None:
            return enc.truncation
    elif seq == ".br":
        return "\n"
    elif seq[:1] == "X" and len(seq) % 2 == 1 and _HEX_DIGITS.issuperset(seq[1:]):
        try:
            return bytes.fromhex(seq[1:]).decode(charset)
        except (UnicodeDecodeError, LookupError):
            pass
    return f"{enc.escape}{seq}{enc.escape}"
