"""A lean ER7 ("pipe and hat") tokenizer for the ingest hot path.

Why our own tokenizer (measured on this 2-core VM, Python 3.11, best of 5, a PCD-01 ORU^R01
with 6 OBX, ~1 kB; see bench/hl7_parse.py for the live figures):

- hl7apy 1.3.5 ``parse_message``: ~11 ms/msg, 89 msg/s (it builds a schema-aware tree);
- python-hl7 0.4.5 ``hl7.parse``: ~475 us/msg, 2,100 msg/s (it splits every field down to
  subcomponents into Python objects up front);
- this module: ~17 us/msg to tokenize, ~34 us including 66 OBX value reads.

The hub's target is >= 3,000 msg/s end to end on 2 cores: about 650 us of CPU per message for
*everything* (MLLP, durable write, mapping, FHIR validation, ACK). python-hl7 alone would spend
three quarters of that, and hl7apy is off by more than an order of magnitude.

The speed comes from doing little: segments and fields are split with ``str.split`` (C code),
components, repetitions and escapes only when a value is asked for, and only for that value.

Numbering is HL7's, 1-based: ``MSH-1`` is the field separator and ``MSH-2`` the encoding
characters, so ``msg.get("MSH", 10)`` is the control id, as in every HL7 document.
"""

from __future__ import annotations

import re
from functools import lru_cache

from hub.hl7v2.encoding import (
    EncodingChars,
    codec_for_charset,
    declared_charset,
    decode_message_bytes,
    encoding_from_header,
)
from hub.hl7v2.errors import ErrorCode, Hl7ParseError
from hub.hl7v2.escape import unescape

_HEADER_SEGMENTS = frozenset({"MSH", "FHS", "BHS"})  # field 1 is the separator, 2 MSH-2
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_LEADING_JUNK = " \t\r\n\x00\ufeff"
# Segment names already matched: a set lookup instead of a regex match per segment (~10 a
# message). At most 26 x 36 x 36 names can ever be added.
_NAMES_SEEN: set[str] = set()


def _name_ok(name: str) -> bool:
    if _SEGMENT_NAME.match(name) is None:
        return False
    _NAMES_SEEN.add(name)
    return True



class _Context:
    """What every value lookup needs: the delimiters and the codec for ``\\X..\\`` escapes.

    The delimiters are copied into plain attributes: value lookups are the hot path, and a
    slot read is several times cheaper than a NamedTuple property.
    """

    __slots__ = ("charset", "cs", "enc", "esc", "rs", "ss")

    def __init__(self, enc: EncodingChars, charset: str) -> None:
        self.enc = enc
        self.charset = charset
        self.rs, self.cs, self.ss, self.esc = (
            enc.repetition, enc.component, enc.subcomponent, enc.escape)


def _pick(raw: str, ctx: _Context, rep: int, comp: int, sub: int) -> str:
    """Cut repetition ``rep``, component ``comp``, subcomponent ``sub`` out of a raw field."""
    if rep < 1 or comp < 1 or sub < 1:
        raise IndexError("HL7 positions are 1-based")
    if not raw:
        return ""
    sep = ctx.rs
    if sep in raw:
        parts = raw.split(sep)
        raw = parts[rep - 1] if rep <= len(parts) else ""
    elif rep != 1:
        return ""
    sep = ctx.cs
    if sep in raw:
        parts = raw.split(sep)
        raw = parts[comp - 1] if comp <= len(parts) else ""
    elif comp != 1:
        return ""
    sep = ctx.ss
    if sep in raw:
        parts = raw.split(sep)
        raw = parts[sub - 1] if sub <= len(parts) else ""
    elif sub != 1:
        return ""
    if ctx.esc in raw:
        return unescape(raw, ctx.enc, ctx.charset)
    return raw


def _check_position(*positions: int) -> None:
    for p in positions:
        if p < 1:
            raise IndexError("HL7 positions are 1-based")


class Repetition:
    """One repetition of a field: raw ER7 text plus the message's delimiters.

    For MSH-1/MSH-2 (``verbatim``) the text is the delimiters themselves: never split.
    """

    __slots__ = ("_ctx", "_verbatim", "raw")

    def __init__(self, raw: str, ctx: _Context, verbatim: bool = False) -> None:
        self.raw = raw
        self._ctx = ctx
        self._verbatim = verbatim

    @property
    def value(self) -> str:
        """First component's first subcomponent, unescaped (HAPI Terser's convention)."""
        return self.subcomponent(1, 1)

    @property
    def text(self) -> str:
        """The whole repetition unescaped, separators kept: for ST/TX/FT free text."""
        if self._verbatim:
            return self.raw
        return unescape(self.raw, self._ctx.enc, self._ctx.charset)

    def component(self, m: int) -> str:
        """Component ``m`` (its first subcomponent), unescaped; ``""`` if absent."""
        return self.subcomponent(m, 1)

    def subcomponent(self, m: int, s: int) -> str:
        """Subcomponent ``s`` of component ``m``, unescaped; ``""`` if absent."""
        _check_position(m, s)
        if self._verbatim:
            return self.raw if m == s == 1 else ""
        return _pick(self.raw, self._ctx, 1, m, s)

    def __repr__(self) -> str:
        return f"Repetition(<{len(self.raw)} chars>)"  # never print values: they may be PHI


class Segment:
    """One segment. Field numbers are HL7's (1-based; for MSH/FHS/BHS, field 1 is the separator).

    Value accessors return ``""`` for anything absent (trailing fields, missing components),
    so callers need no length checks. They return values *unescaped*; ``raw`` returns ER7.
    The HL7 explicit null ``""`` (two double quotes) is returned as that literal text.
    """

    __slots__ = ("_ctx", "_fields", "_header", "name", "sequence")

    def __init__(self, name: str, fields: list[str], ctx: _Context, sequence: int) -> None:
        self.name = name
        self.sequence = sequence  # 1-based position in the message (ERR-2.2)
        self._fields = fields  # index n holds field n; index 0 the segment name
        self._ctx = ctx
        self._header = name in _HEADER_SEGMENTS  # MSH-1/MSH-2 are delimiters, never split

    @property
    def field_count(self) -> int:
        """Number of fields present, trailing empty ones included (MSH counts MSH-1)."""
        return len(self._fields) - 1

    def raw(self, n: int) -> str:
        """Field ``n`` exactly as sent: all repetitions, delimiters and escapes intact."""
        if n < 1:  # the check inline: the mapping reads ~60 raw fields per 6-OBX message
            raise IndexError("HL7 positions are 1-based")
        f = self._fields
        return f[n] if n < len(f) else ""

    def raw_fields(self, count: int) -> list[str]:
        """``[raw(0)?, raw(1), ..., raw(count - 1)]`` as one new list: index ``n`` holds field
        ``n`` exactly as ``raw(n)`` returns it (``""`` when absent; index 0 the segment name).
        For a reader that takes many fields of one segment: the ORU mapping read ~70 fields of
        a 6-OBX message through ``raw``, a Python call each."""
        f = self._fields
        return f[:count] if len(f) >= count else f + [""] * (count - len(f))

    def field(self, n: int, rep: int = 1) -> str:
        """Field ``n`` (repetition ``rep``): its first component's first subcomponent, unescaped.

        For MSH-1 and MSH-2 this is the delimiter text itself, never split or unescaped.
        """
        return self.subcomponent(n, 1, 1, rep)

    def component(self, n: int, m: int, rep: int = 1) -> str:
        """Component ``m`` of field ``n`` (first subcomponent), unescaped."""
        return self.subcomponent(n, m, 1, rep)

    def subcomponent(self, n: int, m: int, s: int, rep: int = 1) -> str:
        """Subcomponent ``s`` of component ``m`` of field ``n``, repetition ``rep``, unescaped."""
        f = self._fields
        if n >= len(f) or n < 1:
            if n < 1:
                raise IndexError("HL7 positions are 1-based")
            return ""
        if n <= 2 and self._header:
            _check_position(m, s, rep)
            return f[n] if m == s == rep == 1 else ""
        return _pick(f[n], self._ctx, rep, m, s)

    def text(self, n: int, rep: int = 1) -> str:
        """Repetition ``rep`` of field ``n`` unescaped as a whole (component separators kept).

        Meant for free-text types (ST/TX/FT) where a careless sender may leave a ``^`` in text.
        """
        _check_position(n, rep)
        raw = self.raw(n)
        if n <= 2 and self._header:
            return raw if rep == 1 else ""
        reps = raw.split(self._ctx.enc.repetition)
        return unescape(reps[rep - 1], self._ctx.enc, self._ctx.charset) if rep <= len(reps) else ""

    def repetitions(self, n: int) -> list[Repetition]:
        """The repetitions of field ``n`` (``[]`` when the field is empty or absent)."""
        raw = self.raw(n)
        if not raw:
            return []
        if n <= 2 and self._header:
            return [Repetition(raw, self._ctx, verbatim=True)]
        return [Repetition(r, self._ctx) for r in raw.split(self._ctx.enc.repetition)]

    @property
    def er7(self) -> str:
        """The segment as ER7 text (without terminator), byte-for-byte as parsed."""
        f = self._fields
        fs = self._ctx.enc.field
        if self._header:
            return f[0] + fs + fs.join(f[2:])
        return fs.join(f)

    def __repr__(self) -> str:
        return f"Segment({self.name} #{self.sequence}, {self.field_count} fields)"


class Message:
    """A tokenized ER7 message. Build it with :func:`parse_message`."""

    __slots__ = ("_ctx", "_index", "charset_guessed", "segments", "text")

    def __init__(
        self, text: str, segments: list[Segment], ctx: _Context, charset_guessed: bool
    ) -> None:
        self.text = text  # the decoded message text, terminators as received
        self.segments = segments  # in message order; segments[0] is the MSH
        self.charset_guessed = charset_guessed  # True if MSH-18 did not decide the codec
        self._ctx = ctx
        self._index: dict[str, list[Segment]] | None = None  # built on first lookup by name

    @property
    def encoding(self) -> EncodingChars:
        """The delimiters declared in MSH-1/MSH-2."""
        return self._ctx.enc

    @property
    def charset(self) -> str:
        """The Python codec the bytes were decoded with (also used for ``\\X..\\`` escapes)."""
        return self._ctx.charset

    @property
    def msh(self) -> Segment:
        """The message header (always ``segments[0]``)."""
        return self.segments[0]

    def _by_name(self) -> dict[str, list[Segment]]:
        index = self._index
        if index is None:
            index = {}
            for seg in self.segments:
                index.setdefault(seg.name, []).append(seg)
            self._index = index
        return index

    def segment(self, name: str) -> Segment | None:
        """The first segment called ``name``, or ``None``."""
        found = self._by_name().get(name)
        return found[0] if found else None

    def segments_named(self, name: str) -> list[Segment]:
        """All segments called ``name``, in message order (a new list each call)."""
        return list(self._by_name().get(name, ()))

    def get(self, name: str, n: int, m: int = 1, s: int = 1, rep: int = 1) -> str:
        """Value at ``name-n.m.s`` (repetition ``rep``) in the first such segment, or ``""``."""
        seg = self.segment(name)
        return seg.subcomponent(n, m, s, rep) if seg is not None else ""

    @property
    def message_type(self) -> str:
        """MSH-9.1, e.g. ``"ORU"``."""
        return self.msh.component(9, 1)

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, e.g. ``"R01"``."""
        return self.msh.component(9, 2)

    @property
    def control_id(self) -> str:
        """MSH-10, unescaped. (ACKs echo ``msh.raw(10)``, the form the sender sent.)"""
        return self.msh.field(10)

    @property
    def version(self) -> str:
        """MSH-12.1, e.g. ``"2.5.1"``."""
        return self.msh.field(12)

    def __repr__(self) -> str:
        return f"Message({self.message_type}^{self.trigger_event}, {len(self.segments)} segments)"


def parse_message(data: bytes | str, *, charset: str | None = None) -> Message:
    """Tokenize one ER7 message.

    Accepts bytes (decoded per MSH-18, see :func:`hub.hl7v2.encoding.decode_message_bytes`; a
    UTF-8 byte-order mark is stripped and a UTF-16 one honoured) or already-decoded text.
    ``charset`` (a Python codec name) overrides MSH-18, e.g. from per-sender configuration.

    Segment terminators: CR, LF and CRLF are all accepted. When the message contains CR, a bare
    LF is a terminator only where a segment header follows it (``\\nOBX|``), so LFs that a
    sender left inside a text value stay data. Blank lines are dropped. Z-segments are kept.

    Raises :class:`Hl7ParseError` (and nothing else, for any input) when the input is empty,
    does not start with MSH, declares unusable delimiters, holds a malformed segment name, is a
    batch (use :func:`hub.hl7v2.batch.split_batch`) or contains a second MSH.
    """
    if isinstance(data, str):
        declared = declared_charset(data)
        codec = charset or (codec_for_charset(declared) if declared else None) or "utf-8"
        return _tokenize(data, codec, False)
    text, codec, guessed = decode_message_bytes(bytes(data), charset)
    return _tokenize(text, codec, guessed)


@lru_cache(maxsize=16)
def _lf_boundary(fs: str) -> re.Pattern[str]:
    # An LF that is followed by something shaped like a segment header ("OBX|", "NTE" alone).
    return re.compile(r"\n+(?=[A-Z][A-Z0-9]{2}(?:" + re.escape(fs) + r"|\n|\Z))")


def _split_segments(text: str, fs: str) -> list[str]:
    if "\r" not in text:
        return text.split("\n")
    parts = text.split("\r")
    if "\n" not in text:
        return parts
    out: list[str] = []
    boundary = _lf_boundary(fs)
    for part in parts:
        part = part.strip("\n")  # CRLF (or LFCR) residue around the CR terminator
        if "\n" in part:
            out.extend(boundary.split(part))
        else:
            out.append(part)
    return out


def _tokenize(text: str, codec: str, guessed: bool) -> Message:
    body = text.lstrip(_LEADING_JUNK)
    if not body.strip():
        raise Hl7ParseError("message is empty", error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
    head = body[:3]
    if head != "MSH":
        if head in ("FHS", "BHS"):
            raise Hl7ParseError("input is a batch; split it into messages first", head,
                                sequence=1, error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
        raise Hl7ParseError("message does not start with an MSH segment", sequence=1,
                            error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
    eol = len(body)
    for terminator in ("\r", "\n"):
        i = body.find(terminator, 0, eol)
        if i >= 0:
            eol = i
    enc = encoding_from_header(body[:eol])
    fs = enc.field
    ctx = _Context(enc, codec)
    segments: list[Segment] = []
    seq = 0
    for line in _split_segments(body, fs):
        if not line or line.isspace():
            continue
        seq += 1
        name = line[:3]
        if (name not in _NAMES_SEEN and not _name_ok(name)) or (len(line) > 3
                                                                  and line[3] != fs):
            raise Hl7ParseError("malformed segment name or missing field separator",
                                sequence=seq, error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
        fields = line.split(fs)
        if name in _HEADER_SEGMENTS:
            if seq > 1:
                reason = ("second MSH segment: the input holds several messages"
                          if name == "MSH" else "batch header segment inside a message")
                raise Hl7ParseError(reason, name, sequence=seq,
                                    error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
            fields.insert(1, fs)  # so that index n is MSH-n, MSH-1 being the separator
        segments.append(Segment(name, fields, ctx, seq))
    return Message(text, segments, ctx, guessed)


def check_header(msg: Message) -> None:
    """Raise :class:`Hl7ParseError` (code 101) if MSH lacks what every receiver needs.

    Required here: MSH-9.1 message type, MSH-10 control id (the ACK must echo it, and
    duplicate detection keys on it), MSH-11 processing id and MSH-12 version id. The
    tokenizer itself does not check these, so that a message with a poor header can still be
    read far enough to be answered and stored for inspection.
    """
    msh = msg.msh
    for n, what in ((9, "message type"), (10, "message control id"), (11, "processing id"),
                    (12, "version id")):
        if not msh.field(n).strip():
            raise Hl7ParseError(f"MSH-{n} {what} is missing", "MSH", n, sequence=1,
                                error_code=ErrorCode.REQUIRED_FIELD_MISSING)
