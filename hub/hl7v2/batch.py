"""Split HL7v2 batch files (FHS/BHS ... BTS/FTS) into individual messages.

Works on bytes, before decoding: segment names, CR and LF are ASCII in every character set the
hub accepts over MLLP and files (UTF-16/32 batches are not supported), so each message keeps
its own bytes and is decoded later per its own MSH-18.
"""

from __future__ import annotations

import re

from hub.hl7v2.errors import ErrorCode, Hl7ParseError

_UTF8_BOM = b"\xef\xbb\xbf"
_NAME = re.compile(rb"[A-Z][A-Z0-9]{2}\Z")
_LF_BEFORE_SEGMENT = re.compile(rb"\n+(?=[A-Z][A-Z0-9]{2}[^A-Za-z0-9\s])")


def split_batch(data: bytes) -> list[bytes]:
    """Return the messages of a batch file, each as ``MSH...`` segments joined and ended by CR.

    Accepts a full file (FHS, BHS, MSH..., BTS, FTS), a bare batch (BHS ... BTS), or simply one
    or more messages one after another (no headers): the common "file of messages" export.
    Z-segments and every other segment stay with the message they follow. An empty batch
    (headers only) yields ``[]``.

    Raises :class:`Hl7ParseError` when a segment other than a batch header/trailer appears
    before the first MSH (e.g. a batch whose MSH is missing), when a segment name is malformed,
    when anything follows FTS, when the input holds no message and no batch header, or when a
    BTS-1 / FTS-1 count disagrees with what the file holds (a truncated transfer).
    """
    body = data[3:] if data.startswith(_UTF8_BOM) else data
    messages: list[list[bytes]] = []
    current: list[bytes] | None = None
    batch_messages = 0  # messages since the last BHS, for BTS-1
    batches = 0  # BHS segments seen, for FTS-1
    saw_header = False
    finished = False
    for seq, line in enumerate(_segments(body), start=1):
        name = line[:3]
        if not _NAME.match(name) or (len(line) > 3 and line[3:4].isalnum()):
            raise Hl7ParseError("malformed segment name", sequence=seq,
                                error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
        sname = name.decode("ascii")
        if finished:
            raise Hl7ParseError("segment after the file trailer FTS", sname, sequence=seq,
                                error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
        if name == b"MSH":
            current = [line]
            messages.append(current)
            batch_messages += 1
        elif name in (b"FHS", b"BHS"):
            if name == b"FHS" and seq != 1:
                raise Hl7ParseError("file header FHS is not the first segment", sname,
                                    sequence=seq, error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
            if name == b"BHS":
                batches += 1
                batch_messages = 0
            saw_header = True
            current = None
        elif name in (b"BTS", b"FTS"):
            expected = batch_messages if name == b"BTS" else batches
            _check_count(line, expected, sname, seq)
            finished = name == b"FTS"
            current = None
        elif current is None:
            raise Hl7ParseError("segment outside any message (no MSH before it)", sname,
                                sequence=seq, error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
        else:
            current.append(line)
    if not messages and not saw_header:
        raise Hl7ParseError("input holds no MSH segment",
                            error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
    return [b"\r".join(segs) + b"\r" for segs in messages]


def _segments(body: bytes) -> list[bytes]:
    # Same terminator rules as the message tokenizer: CR, CRLF, or LF; with CR present, an LF
    # only ends a segment when a segment header follows it.
    if b"\r" in body:
        pieces: list[bytes] = []
        for part in body.split(b"\r"):
            part = part.strip(b"\n")
            pieces.extend(_LF_BEFORE_SEGMENT.split(part) if b"\n" in part else (part,))
    else:
        pieces = body.split(b"\n")
    return [p for p in pieces if p.strip(b" \t\x00")]


def _check_count(line: bytes, expected: int, name: str, seq: int) -> None:
    # BTS-1 (batch message count) and FTS-1 (file batch count) are optional; when present
    # they guard against a batch cut short in transfer, so a mismatch refuses the whole file.
    if len(line) < 5:
        return
    value = line[4:].split(line[3:4], 1)[0].strip()
    if value.isdigit() and int(value) != expected:
        raise Hl7ParseError(
            f"{name}-1 count is {int(value)} but the {'batch' if name == 'BTS' else 'file'} "
            f"holds {expected}",
            name, 1, sequence=seq, error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR,
        )
