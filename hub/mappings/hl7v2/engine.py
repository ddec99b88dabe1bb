"""The HL7v2 extraction engine: a tokenized message (or a batch of them) → an Extraction.

MSH-9 picks the extraction: ORU^R01 → readings (``oru``), ADT^A01/A04/A08/A28/A31 → a Patient
upsert and ADT^A40 → a merge (``adt``). Anything else is refused with the reason. The sender map
is the one whose MSH-3/MSH-4 match, or the one named by the mapping (``hl7v2:<name>``).

In a batch each message is extracted on its own: a refused message becomes an error naming
``message #n`` and the others still convert.
"""

from __future__ import annotations

from typing import Any

from hub.contracts import Extraction
from hub.errors import DataError, UnknownSourceError
from hub.hl7v2 import Message
from hub.mappings.hl7v2.adt import MERGE_EVENTS, UPSERT_EVENTS, extract_adt
from hub.mappings.hl7v2.codes import safe_code
from hub.mappings.hl7v2.oru import extract_oru
from hub.mappings.hl7v2.tables import CompiledSender, Hl7v2Maps

SUPPORTED = {"ORU": frozenset({"R01"}), "ADT": UPSERT_EVENTS | MERGE_EVENTS}


def extract(maps: Hl7v2Maps, mapping: str, document: Any) -> Extraction:
    """Run the engine over a ``hub.hl7v2.Message`` or a list of them (a batch file)."""
    messages = document if isinstance(document, list) else [document]
    if not messages or not all(isinstance(m, Message) for m in messages):
        raise DataError("the hl7v2 mapping needs a tokenized HL7v2 message")
    forced: CompiledSender | None = None
    if mapping.startswith("hl7v2:"):
        forced = maps.named(mapping.split(":", 1)[1])
        if forced is None:
            raise UnknownSourceError(f"no HL7v2 sender map named '{mapping.split(':', 1)[1]}'")
    out = Extraction()
    for number, msg in enumerate(messages, start=1):
        prefix = f"message #{number} " if len(messages) > 1 else ""
        try:
            _one(msg, maps, forced, out, prefix)
        except DataError as exc:
            if len(messages) == 1:
                raise
            where = exc.location or f"{prefix}MSH".strip()
            out.errors.append(DataError(exc.message, location=where if exc.location
                                        else f"message #{number}"))
    return out


def _one(msg: Message, maps: Hl7v2Maps, forced: CompiledSender | None, out: Extraction,
         prefix: str) -> None:
    kind, event = msg.message_type.strip().upper(), msg.trigger_event.strip().upper()
    if kind not in SUPPORTED:
        raise DataError(f"unsupported message type {safe_code(kind)} (this hub takes ORU^R01 "
                        "and ADT^A01/A04/A08/A28/A31/A40)", location=f"{prefix}MSH-9")
    if event not in SUPPORTED[kind]:
        raise DataError(f"unsupported event {kind}^{safe_code(event)} (this hub takes "
                        "ORU^R01 and ADT^A01/A04/A08/A28/A31/A40)", location=f"{prefix}MSH-9")
    if kind == "ADT":
        extract_adt(msg, event, maps, out, prefix)
        return
    msh = msg.msh
    sender = forced or maps.sender_for(msh.component(3, 1).strip(), msh.component(4, 1).strip())
    extract_oru(msg, maps, sender, out, prefix)
