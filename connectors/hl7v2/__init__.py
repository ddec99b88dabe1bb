"""HL7v2 (ER7) messages: ORU^R01 / IHE PCD-01 readings and ADT patient identity.

``decode`` tokenizes with the hub's lean ER7 tokenizer (``hub.hl7v2``; hl7apy is ~600x slower
and stays off the hot path) and checks, cheaply, what a receiver must refuse at the door:

- input that is not an HL7v2 message, a header without MSH-9/10/11/12 → :class:`Hl7ParseError`
  (an MLLP/HTTP channel answers AR);
- a message type or event the hub does not take (table 0357 codes 200/201) → AR;
- content errors found without mapping anything (an ADT without PID-3, an ORU without OBX, an
  NM value that is not a number) → :class:`Hl7ParseError` with code 100/101/102 naming segment
  and field (the channel answers AE). Problems with single OBX rows that the mapping finds (a
  missing OBX-3, an unsupported value type) leave the rest of the message converting; they are
  listed on the message (``GET /messages/{id}``).

A batch file (FHS/BHS ... BTS/FTS) decodes to the list of its messages. ``extract`` runs the
HL7v2 mapping engine (``MappingSet.extract("hl7v2", ...)``, see ``hub/mappings/hl7v2``); the
sender map is picked by MSH-3/MSH-4, or forced with ``mapping: hl7v2:<sender map>``.
"""

from __future__ import annotations

import re
from typing import ClassVar

from hub.contracts import JSON, Connector, ConnectorConfig, Extraction, MeasurementExtractor
from hub.hl7v2 import (
    ErrorCode,
    Hl7ParseError,
    Message,
    check_header,
    parse_message,
    split_batch,
)

SUPPORTED = {"ORU": frozenset({"R01"}),
             "ADT": frozenset({"A01", "A04", "A08", "A28", "A31", "A40"})}
_NUMERIC = frozenset({"NM"})
_SECOND_HEADER = re.compile(rb"[\r\n]\s*MSH")


class Hl7v2Config(ConnectorConfig):
    """``mapping``: ``hl7v2`` (default; sender map chosen by MSH-3/MSH-4) or ``hl7v2:<name>``."""


def supported(msg: Message) -> None:
    """Raise Hl7ParseError (200/201) unless the hub takes this message type and event."""
    kind, event = msg.message_type.strip().upper(), msg.trigger_event.strip().upper()
    if kind not in SUPPORTED:
        raise Hl7ParseError("unsupported message type (this hub takes ORU^R01 and "
                            "ADT^A01/A04/A08/A28/A31/A40)", "MSH", 9, sequence=1,
                            error_code=ErrorCode.UNSUPPORTED_MESSAGE_TYPE)
    if event not in SUPPORTED[kind]:
        raise Hl7ParseError("unsupported trigger event (this hub takes ORU^R01 and "
                            "ADT^A01/A04/A08/A28/A31/A40)", "MSH", 9, sequence=1,
                            error_code=ErrorCode.UNSUPPORTED_EVENT_CODE)


def content_checks(msg: Message) -> None:
    """Cheap structural checks of the content (see module docstring); the first problem wins."""
    if msg.message_type.strip().upper() == "ADT":
        pid = msg.segment("PID")
        if pid is None:
            raise Hl7ParseError("ADT without a PID segment", "PID", sequence=None,
                                error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
        if not any(r.component(1).strip() for r in pid.repetitions(3)):
            raise Hl7ParseError("PID-3 patient identifier list is empty", "PID", 3,
                                sequence=pid.sequence,
                                error_code=ErrorCode.REQUIRED_FIELD_MISSING)
        return
    obxs = msg.segments_named("OBX")
    if not obxs:
        raise Hl7ParseError("ORU without an OBX segment", "OBX",
                            error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
    enc = msg.encoding
    for obx in obxs:
        # Raw text first: a plain "NM" and a plain number need no unescaping or splitting
        # (this runs for every OBX at the door and again in the worker).
        # One read of OBX-0..5 instead of two raw() calls (a Python call each).
        raw2, raw = obx.raw_fields(6)[2::3]
        if raw2 != "NM" and (not raw2 or obx.field(2).strip().upper() not in _NUMERIC):
            continue  # (an empty OBX-2, as on PCD-01 device rows, is not NM either)
        if enc.repetition in raw:
            continue  # repeated NM values: the mapping reports them per row
        if enc.component in raw or enc.subcomponent in raw or enc.escape in raw:
            raw = obx.field(5)
        value = raw.strip().lstrip("<>=")
        if value and not (value.isascii() and value.isdigit()) and not _is_number(value):
            raise Hl7ParseError("OBX-5 is not a number although OBX-2 says NM", "OBX", 5,
                                sequence=obx.sequence, error_code=ErrorCode.DATA_TYPE_ERROR)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def decode_one(body: bytes) -> Message:
    """Tokenize and check one message (raises Hl7ParseError, a DataError)."""
    msg = parse_message(body)
    check_header(msg)
    supported(msg)
    content_checks(msg)
    return msg


class Hl7v2Connector(Connector):
    """HL7v2 ER7 over MLLP, ``POST /hl7v2`` or ``POST /ingest/hl7v2`` and files."""

    name: ClassVar[str] = "hl7v2"
    content_types: ClassVar[frozenset[str]] = frozenset(
        {"x-application/hl7-v2+er7", "application/hl7-v2", "text/plain"})
    Config: ClassVar[type[ConnectorConfig]] = Hl7v2Config

    @property
    def mapping_name(self) -> str:
        return self.config.mapping or "hl7v2"

    def decode(self, body: bytes, content_type: str) -> JSON:
        """One message (a :class:`hub.hl7v2.Message`) or, for a batch file, the list of them."""
        stripped = body.lstrip(b"\xef\xbb\xbf \t\r\n\x00")
        # The regex only where a second "MSH" is there to find: its character-class scan of
        # every byte cost ~42,000 instructions a 1 kB message (a tenth of the door's work),
        # a bytes.find ~1,000.
        if stripped[:3] in (b"FHS", b"BHS") or (
                stripped.find(b"MSH", 1) != -1 and _SECOND_HEADER.search(stripped)):
            parts = split_batch(body)
            if not parts:
                raise Hl7ParseError("the batch holds no message",
                                    error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR)
            if len(parts) > 1:
                return [decode_one(part) for part in parts]
            return decode_one(parts[0])
        return decode_one(body)

    def event_id(self, document: JSON) -> str | None:
        """MSH-3 + MSH-4 + MSH-10: the sender's message identity (IHE PCD, InterSystems)."""
        if not isinstance(document, Message):
            return None
        msh = document.msh
        return f"msh:{msh.raw(3)}|{msh.raw(4)}|{msh.raw(10)}"[:200]

    def extract(self, document: JSON, mappings: MeasurementExtractor) -> Extraction:
        return mappings.extract(self.mapping_name, document)
