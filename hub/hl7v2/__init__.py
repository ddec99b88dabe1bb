"""The hub's low-level HL7v2 layer: ER7 tokenizer, escaping, batches, ACKs and MLLP framing.

Standard library only, no I/O: connectors (``connectors.mllp``) and the hub both build on it.
Positions are 1-based as HL7 numbers them (MSH-1 is the field separator). Errors are
:class:`Hl7ParseError`, whose messages never contain values from the message.
"""

from __future__ import annotations

from hub.hl7v2.ack import (
    AckCode,
    AckError,
    AckMode,
    AckPlan,
    Outcome,
    ack_mode,
    build_ack,
    build_reject_ack,
    deferred_application_ack,
    new_control_id,
    plan_acks,
)
from hub.hl7v2.batch import split_batch
from hub.hl7v2.encoding import (
    DEFAULT_ENCODING,
    EncodingChars,
    codec_for_charset,
    decode_bytes,
)
from hub.hl7v2.er7 import Message, Repetition, Segment, check_header, parse_message
from hub.hl7v2.errors import ErrorCode, Hl7ParseError
from hub.hl7v2.escape import escape, unescape
from hub.hl7v2.mllp import (
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    FramingError,
    FramingErrorKind,
    MllpDecoder,
    frame,
)

__all__ = [
    "DEFAULT_ENCODING",
    "DEFAULT_MAX_FRAME_BYTES",
    "AckCode",
    "AckError",
    "AckMode",
    "AckPlan",
    "EncodingChars",
    "ErrorCode",
    "Frame",
    "FramingError",
    "FramingErrorKind",
    "Hl7ParseError",
    "Message",
    "MllpDecoder",
    "Outcome",
    "Repetition",
    "Segment",
    "ack_mode",
    "build_ack",
    "build_reject_ack",
    "check_header",
    "codec_for_charset",
    "decode_bytes",
    "deferred_application_ack",
    "escape",
    "frame",
    "new_control_id",
    "parse_message",
    "plan_acks",
    "split_batch",
    "unescape",
]
