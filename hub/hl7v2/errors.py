"""The one error the HL7v2 layer raises, and the HL7 error codes it carries.

Contract: every reason is written so that it can go verbatim into an ACK (ERR segment), a log
line or an OperationOutcome. It names *where* (segment name, segment position, field number)
and *what kind* of problem, never a value taken from the message: any field may hold patient
data, and the segment name is only quoted once it has been checked to be a well-formed name.
"""

from __future__ import annotations

from enum import IntEnum

from hub.errors import DataError


class ErrorCode(IntEnum):
    """HL7 table 0357 (message error condition codes), the values an ACK may carry in ERR."""

    ACCEPTED = 0
    SEGMENT_SEQUENCE_ERROR = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE_ERROR = 102
    TABLE_VALUE_NOT_FOUND = 103
    VALUE_TOO_LONG = 104
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION_ID = 203
    UNKNOWN_KEY_IDENTIFIER = 204
    DUPLICATE_KEY_IDENTIFIER = 205
    APPLICATION_RECORD_LOCKED = 206
    APPLICATION_INTERNAL_ERROR = 207

    @property
    def text(self) -> str:
        """The table's display text, e.g. ``"Data type error"`` (ERR-3.2 / ELD-4.2)."""
        return _TEXTS[self]


_TEXTS = {
    ErrorCode.ACCEPTED: "Message accepted",
    ErrorCode.SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE_ERROR: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.VALUE_TOO_LONG: "Value too long",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION_ID: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    ErrorCode.APPLICATION_RECORD_LOCKED: "Application record locked",
    ErrorCode.APPLICATION_INTERNAL_ERROR: "Application internal error",
}


class Hl7ParseError(DataError):
    """The input is not an HL7v2 ER7 message the hub can tokenize (or a batch it can split).

    Attributes (all safe to log and to echo in an ACK):

    - ``reason``: what is wrong, without any value from the message.
    - ``segment``: the segment name (``"MSH"``, ``"OBX"``), or ``None`` when unknown/malformed.
    - ``field``: the 1-based field number as HL7 numbers it (MSH-1 is the field separator).
    - ``sequence``: the 1-based position of the segment in the message (ERR-2.2).
    - ``error_code``: the HL7 table 0357 condition code an ACK should carry. (``code`` is the
      FHIR issue type inherited from :class:`hub.errors.DataError`.)
    """

    def __init__(
        self,
        reason: str,
        segment: str | None = None,
        field: int | None = None,
        *,
        sequence: int | None = None,
        error_code: ErrorCode = ErrorCode.DATA_TYPE_ERROR,
    ) -> None:
        location = None
        if segment is not None:
            location = segment if field is None else f"{segment}-{field}"
        elif sequence is not None:
            location = f"segment #{sequence}"
        super().__init__(_describe(reason, segment, field, sequence), location=location)
        self.reason = reason
        self.segment = segment
        self.field = field
        self.sequence = sequence
        self.error_code = error_code


def _describe(reason: str, segment: str | None, field: int | None, sequence: int | None) -> str:
    where: list[str] = []
    if segment is not None:
        where.append(f"segment {segment}" + (f" #{sequence}" if sequence is not None else ""))
    elif sequence is not None:
        where.append(f"segment #{sequence}")
    if field is not None:
        where.append(f"field {field}")
    return f"{reason} ({', '.join(where)})" if where else reason
