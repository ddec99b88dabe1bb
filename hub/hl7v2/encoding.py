"""Delimiters (MSH-1/MSH-2) and character sets (MSH-18) of an ER7 message.

Both are read from the header before anything else is tokenized: the delimiters because every
later split depends on them, the character set because the bytes must be decoded before any
non-ASCII value can be read.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from hub.hl7v2.errors import ErrorCode, Hl7ParseError


class EncodingChars(NamedTuple):
    """The message's delimiters: MSH-1 (field) and MSH-2 (the others, in this order).

    ``truncation`` is the optional fifth MSH-2 character introduced in v2.7 (usually ``#``).
    """

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str | None = None

    @property
    def msh2(self) -> str:
        """The MSH-2 text that declares these characters (4 or 5 characters)."""
        return (
            self.component + self.repetition + self.escape + self.subcomponent
            + (self.truncation or "")
        )


DEFAULT_ENCODING = EncodingChars()


def encoding_from_header(header: str, segment: str = "MSH") -> EncodingChars:
    """Read the delimiters from a header segment (MSH, FHS or BHS) that starts at ``header[0]``.

    Contract: ``header[3]`` is the field separator; MSH-2 runs from ``header[4]`` to the next
    field separator (or the end) and must be 4 or 5 distinct characters, none of them the field
    separator, a letter, a digit or whitespace. Anything else raises :class:`Hl7ParseError`
    (code 102), because every later split would be wrong.
    """
    if len(header) < 4:
        raise Hl7ParseError(
            "header segment ends before its field separator", segment, 1, sequence=1
        )
    fs = header[3]
    end = header.find(fs, 4)
    return _check(fs, header[4:] if end < 0 else header[4:end], segment)


# Memoised: a sender uses one set of delimiters, and the checks cost ~2 us a message at the
# door and again in the worker. Only valid sets are kept (lru_cache keeps no exceptions: an
# invalid set raises again, with its segment).
@lru_cache(maxsize=64)
def _check(fs: str, chars: str, segment: str) -> EncodingChars:
    if not _is_delimiter(fs):
        raise Hl7ParseError(
            "field separator is a letter, digit, whitespace or control character",
            segment, 1, sequence=1,
        )
    if len(chars) not in (4, 5):
        raise Hl7ParseError(
            f"encoding characters must be 4 or 5 characters, found {len(chars)}",
            segment, 2, sequence=1,
        )
    if len(set(chars)) != len(chars) or fs in chars:
        raise Hl7ParseError(
            "encoding characters are not distinct from each other and from the field separator",
            segment, 2, sequence=1,
        )
    if not all(_is_delimiter(c) for c in chars):
        raise Hl7ParseError(
            "encoding characters include a letter, digit, whitespace or control character",
            segment, 2, sequence=1,
        )
    return EncodingChars(fs, chars[0], chars[1], chars[2], chars[3], chars[4:5] or None)


def _is_delimiter(c: str) -> bool:
    # Delimiters must be printable punctuation: a letter or digit would collide with segment
    # names and values, whitespace/control characters with segment terminators and framing.
    return c.isprintable() and not c.isalnum() and not c.isspace()


# HL7 table 0211 (alternate character sets) -> Python codec. Only ASCII-compatible encodings
# are listed: MSH-18 is found by scanning the raw bytes, which only works when the header's
# ASCII bytes are themselves. UTF-16/32 input is recognised by its byte-order mark instead.
# Values not listed here (including table 0211's JIS X 0201/0212 and CNS 11643 variants, for
# which Python has no exact codec) fall back to the default decoding; see decode_bytes.
_CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3",
    "ISO IR109": "iso8859-3",
    "8859/4": "iso8859-4",
    "ISO IR110": "iso8859-4",
    "8859/5": "iso8859-5",
    "ISO IR144": "iso8859-5",
    "8859/6": "iso8859-6",
    "ISO IR127": "iso8859-6",
    "8859/7": "iso8859-7",
    "ISO IR126": "iso8859-7",
    "8859/8": "iso8859-8",
    "ISO IR138": "iso8859-8",
    "8859/9": "iso8859-9",
    "ISO IR148": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    "JIS X 0202": "iso2022_jp",
    "ISO IR87": "iso2022_jp",
}


def codec_for_charset(msh18: str) -> str | None:
    """The Python codec for an MSH-18 value (first repetition, first component), or ``None``.

    Matching ignores case and surrounding blanks; ``None`` means "empty or not recognised".
    """
    return _CHARSETS.get(msh18.strip().upper())


def decode_bytes(data: bytes, declared: str | None) -> tuple[str, str, bool]:
    """Decode a message's bytes; return ``(text, codec used, guessed)``.

    Policy (``guessed`` is True whenever the codec was not taken from MSH-18 as declared):

    - A declared, recognised charset is applied strictly; bytes that are invalid for it raise
      :class:`Hl7ParseError` (MSH-18, code 102) rather than silently corrupting names.
    - Exception: ``ASCII``. Many engines put it in MSH-18 as a default label while sending
      UTF-8 or Latin-1; both are ASCII supersets, so falling back cannot change the meaning of
      any byte that really is ASCII.
    - Empty or unrecognised MSH-18: UTF-8 if the bytes are valid UTF-8 (the overwhelmingly
      common modern case, and UTF-8's structure makes a false positive on Latin-1 text very
      unlikely), otherwise ISO 8859-1, the standard's own 8859/1 and the usual European
      legacy charset. Latin-1 maps every byte, so this path never fails.
    """
    codec = codec_for_charset(declared) if declared else None
    if codec is not None:
        try:
            return data.decode(codec), codec, False
        except UnicodeDecodeError:
            if codec != "ascii":
                raise Hl7ParseError(
                    "message bytes are not valid in the character set declared in MSH-18",
                    "MSH", 18, sequence=1, error_code=ErrorCode.DATA_TYPE_ERROR,
                ) from None
    try:
        return data.decode("utf-8"), "utf-8", True
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1", True


_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_message_bytes(raw: bytes, override: str | None = None) -> tuple[str, str, bool]:
    """Decode one message's bytes; return ``(text, codec, guessed)``.

    A UTF-8 byte-order mark is dropped; a UTF-16 one selects UTF-16 (the only way a UTF-16
    message can be recognised, since its MSH is not ASCII). Otherwise ``override`` (a Python
    codec name from configuration; an unknown name raises ``LookupError``) or else MSH-18 via
    :func:`decode_bytes`. Undecodable bytes raise :class:`Hl7ParseError`.
    """
    if raw.startswith(_UTF8_BOM):
        raw = raw[3:]
    try:
        if raw.startswith(_UTF16_BOMS):
            return raw.decode("utf-16"), "utf-16", False
        if override is not None:
            return raw.decode(override), override, False
    except UnicodeDecodeError:
        raise Hl7ParseError(
            "message bytes are not valid in the configured or byte-order-marked character set",
            error_code=ErrorCode.DATA_TYPE_ERROR,
        ) from None
    return decode_bytes(raw, _declared_charset_in_bytes(raw))


def _declared_charset_in_bytes(raw: bytes) -> str | None:
    start = len(raw) - len(raw.lstrip(b" \t\r\n\x00"))
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        i = raw.find(terminator, start, end)
        if i >= 0:
            end = i
    # Latin-1 maps bytes 1:1 to code points, so delimiter positions are preserved exactly.
    return declared_charset(raw[start:end].decode("latin-1"))


def declared_charset(text: str) -> str | None:
    """MSH-18's first repetition's first component, read from a header line; ``None`` if empty.

    Tolerant by design (it runs before the header is validated): anything that does not look
    like an MSH with at least 18 fields yields ``None``.
    """
    header = text.lstrip(" \t\r\n\x00\ufeff")
    if not header.startswith("MSH") or len(header) < 9:
        return None
    fs = header[3]
    fields = header.split("\r", 1)[0].split("\n", 1)[0].split(fs)
    if len(fields) < 18 or len(fields[1]) < 4:
        return None
    value = fields[17].split(fields[1][1], 1)[0].split(fields[1][0], 1)[0]
    return value or None
