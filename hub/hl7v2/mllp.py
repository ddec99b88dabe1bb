"""MLLP framing (Minimal Lower Layer Protocol, HL7 v2 appendix C / MLLP R2), without I/O.

A frame is ``0x0B payload 0x1C 0x0D``. :class:`MllpDecoder` turns a byte stream, read in chunks
of any size, into frames and framing errors; :func:`frame` wraps one payload for sending.

Recovery rules, chosen so that one bad sender can neither crash nor stall a connection:

- Bytes outside a frame (NULs, stray text, a sender's keep-alive) are skipped up to the next
  start block and reported once per run as ``GARBAGE``. Runs made only of CR/LF are skipped
  silently: a trailing CRLF after the end block is a common, harmless sender habit.
- The end block is ``0x1C``; the ``0x0D`` after it is consumed when present but not required
  (0x1C cannot occur in HL7 text, and some senders omit the CR).
- A start block inside a frame means the previous frame lost its end block: it is reported as
  ``UNTERMINATED`` (with its first bytes, so it can still be answered) and the new one starts.
  So is a partial frame at end of stream. An empty one (two start blocks) is just GARBAGE.
- A frame that grows past ``max_frame_bytes`` is reported as ``OVERSIZE`` as soon as it does,
  then everything is discarded until its end block or the next start block. Memory per
  connection therefore stays within ``max_frame_bytes`` plus one read.

The decoder never raises on input; results are identical however the stream is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D
DEFAULT_MAX_FRAME_BYTES = 10 * 1024 * 1024  # Google Cloud Healthcare's HL7v2 message limit
HEAD_BYTES = 1024  # bytes of a discarded frame kept so that an ACK can echo its MSH

_START = b"\x0b"
_END = b"\x1c"
_CRLF = frozenset(b"\r\n")


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete MLLP frame; ``payload`` excludes the block characters."""

    payload: bytes


class FramingErrorKind(Enum):
    GARBAGE = "garbage"  # bytes between frames, skipped
    UNTERMINATED = "unterminated"  # a frame cut short by the next start block
    OVERSIZE = "oversize"  # a frame larger than max_frame_bytes, discarded


@dataclass(frozen=True, slots=True)
class FramingError:
    """A framing problem the decoder recovered from (a value, not an exception).

    ``size`` counts the bytes skipped or discarded so far (for OVERSIZE: at the moment the cap
    was crossed). ``head`` holds up to the first 1 KiB of a discarded frame, so that the
    listener can answer its MSH; it may contain patient data and must never be logged.
    """

    kind: FramingErrorKind
    size: int
    head: bytes = b""

    @property
    def reason(self) -> str:
        """A PHI-free description for logs and ACKs."""
        if self.kind is FramingErrorKind.GARBAGE:
            return f"skipped {self.size} bytes outside any MLLP frame"
        if self.kind is FramingErrorKind.UNTERMINATED:
            return "MLLP frame ended without its end block (0x1C 0x0D)"
        return "message exceeds the receiver's MLLP frame size limit"


class _State(Enum):
    OUTSIDE = 0
    IN_FRAME = 1
    DISCARDING = 2


class MllpDecoder:
    """Incremental MLLP decoder. Feed it bytes; it returns what completed in them."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self._state = _State.OUTSIDE
        self._buf = bytearray()
        self._garbage = 0  # bytes in the current run outside frames
        self._garbage_notable = False  # the run holds something other than CR/LF
        self._swallow_cr = False  # the previous chunk ended right after an end block

    @property
    def in_frame(self) -> bool:
        """True while a frame has started but not ended (bytes are pending)."""
        return self._state is not _State.OUTSIDE

    def feed(self, data: bytes) -> list[Frame | FramingError]:
        """Consume ``data``; return the frames and errors it completed, in stream order."""
        out: list[Frame | FramingError] = []
        pos, n = 0, len(data)
        if self._swallow_cr and n:
            self._swallow_cr = False
            if data[0] == CARRIAGE_RETURN:
                pos = 1
        while pos < n:
            if self._state is _State.OUTSIDE:
                pos = self._skip_to_start(data, pos, out)
            else:
                pos = self._read_frame(data, pos, out)
        return out

    def close(self) -> list[FramingError]:
        """End of stream: report what is left (a pending garbage run or a partial frame)."""
        out: list[FramingError] = []
        garbage = self._take_garbage()
        if garbage is not None:
            out.append(garbage)
        if self._state is _State.IN_FRAME:
            out.append(self._unterminated())
        self._state, self._buf, self._swallow_cr = _State.OUTSIDE, bytearray(), False
        return out

    def _skip_to_start(self, data: bytes, pos: int, out: list[Frame | FramingError]) -> int:
        start = data.find(_START, pos)
        end = len(data) if start < 0 else start
        if end > pos:
            self._garbage += end - pos
            if not self._garbage_notable and not _CRLF.issuperset(data[pos:end]):
                self._garbage_notable = True
        if start < 0:
            return len(data)
        garbage = self._take_garbage()
        if garbage is not None:
            out.append(garbage)
        self._state = _State.IN_FRAME
        return start + 1

    def _take_garbage(self) -> FramingError | None:
        run, notable = self._garbage, self._garbage_notable
        self._garbage, self._garbage_notable = 0, False
        return FramingError(FramingErrorKind.GARBAGE, run) if run and notable else None

    def _read_frame(self, data: bytes, pos: int, out: list[Frame | FramingError]) -> int:
        # Look for whichever block character comes first: an end block completes the frame, a
        # start block means the current frame was never terminated.
        end = data.find(_END, pos)
        start = data.find(_START, pos, end if end >= 0 else len(data))
        stop = start if start >= 0 else (end if end >= 0 else len(data))
        chunk = memoryview(data)[pos:stop]
        if self._state is _State.IN_FRAME:
            if len(self._buf) + len(chunk) > self.max_frame_bytes:
                # The head is the frame's first min(HEAD_BYTES, cap + 1) bytes: always
                # available at this point, so it does not depend on how reads were chunked.
                self._buf.extend(chunk[: max(0, HEAD_BYTES - len(self._buf))])
                head = bytes(self._buf[: min(HEAD_BYTES, self.max_frame_bytes + 1)])
                out.append(FramingError(FramingErrorKind.OVERSIZE, self.max_frame_bytes + 1, head))
                self._buf = bytearray()
                self._state = _State.DISCARDING
            else:
                self._buf.extend(chunk)
        if start >= 0:  # a new frame begins before this one ended
            if self._state is _State.IN_FRAME:
                out.append(self._unterminated())
            self._buf = bytearray()
            self._state = _State.IN_FRAME
            return start + 1
        if end >= 0:
            if self._state is _State.IN_FRAME:
                out.append(Frame(bytes(self._buf)))
            self._buf = bytearray()
            self._state = _State.OUTSIDE
            if end + 1 < len(data):
                return end + 2 if data[end + 1] == CARRIAGE_RETURN else end + 1
            self._swallow_cr = True
            return len(data)
        return len(data)


    def _unterminated(self) -> FramingError:
        # A start block with nothing after it before the next one is a stray byte, not a
        # message: report it as garbage so that nobody answers it.
        if not self._buf:
            return FramingError(FramingErrorKind.GARBAGE, 1)
        return FramingError(FramingErrorKind.UNTERMINATED, len(self._buf),
                            bytes(self._buf[:HEAD_BYTES]))


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an MLLP frame.

    Raises ``ValueError`` if the payload contains a block character (0x0B or 0x1C), which
    would corrupt the framing for the receiver; HL7 text escapes them as ``\\X0B\\``/``\\X1C\\``.
    """
    if _START in payload or _END in payload:
        raise ValueError("payload contains an MLLP block character (0x0B or 0x1C)")
    return _START + payload + _END + b"\r"
