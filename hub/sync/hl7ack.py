"""Delivering HL7v2 deferred application ACKs to the sender's MLLP return address.

The outbox row (``hub.sync.replies``) names the inbound message; each attempt rebuilds the ACK
from the stored message and its outcome (``hub.store.replies``), so a retry sends the same bytes:

- MSA-1: AA when the message was processed; AE when it was processed in part or not at all
  because of its content (``partial``/``failed``); AR after an internal error (table 0008: the
  receiver could not process it; the dead letter can be replayed). MSA-2 echoes MSH-10.
- ERR (v2.5+: ERR-2 location, ERR-3 table 0357 code, ERR-4 severity, ERR-8 text; earlier:
  ERR-1) for each problem the worker listed, at most 20: 101 for a missing element, 103 for an
  unknown code or type, 207 for an internal error, 102 otherwise.
- MSH mirrors the original (apps and facilities swapped, version, delimiters, charset); MSH-7 is
  when the message was processed; MSH-10 is derived from the inbound message id, stable across
  retries, so a receiver that deduplicates on it drops a resend; MSH-15/MSH-16 are the
  destination's ``accept_ack`` / NE (HL7 v2.5 §2.9.3: the application ACK is a message the
  receiver initiates, and it may ask for an accept ACK in return).

Why a return address and not the connection the message came on: MLLP is a synchronous
exchange in which the initiator reads the next frame as the answer to what it just sent; an
application ACK written unasked onto that connection would be read by a sender (HAPI, Mirth,
python-hl7...) as the answer to its *next* message. So the ACK goes, as its own exchange, to the
sender's listener (the "two connections" arrangement HAPI calls two-port), and is delivered once
the sender's accept ACK (CA, or AA) names it; CE/CR/AE/AR are dead-lettered with the reason; no
answer is retried. With ``accept_ack: NE`` the sender is told not to answer and the row counts
as delivered once written to the socket (no confirmation is possible then).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from sqlalchemy.engine import Engine

from hub.errors import ConfigurationError, RetriableDeliveryError
from hub.hl7v2 import AckCode, AckError, ErrorCode, Hl7ParseError, build_ack, parse_message
from hub.store import inbox
from hub.store.delivery import Claimed
from hub.store.replies import Ended, ended
from hub.sync.config import Hl7v2AckDestination, Limits
from hub.sync.hl7out import MllpPeer, control_id, read_ack
from hub.sync.policy import OK, Attempt, Verdict
from hub.sync.replies import ACK_TYPE

INTERNAL = "internal error"
_CODES = {inbox.STATUS_PROCESSED: AckCode.AA, inbox.STATUS_PARTIAL: AckCode.AE,
          inbox.STATUS_FAILED: AckCode.AE}
# "OBX[3]-5: reason", "MSH-7: reason", "OBR[1]-7: reason" (hub.pipeline's error summary).
_PROBLEM = re.compile(r"(?:message #\d+ )?([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+))?: (.+)\Z",
                      re.DOTALL)
MAX_ERR = 20


def problems(error: str | None) -> list[AckError]:
    """The worker's reasons as ERR segments (see module docstring)."""
    if not error:
        return []
    if error.startswith(INTERNAL):  # one reason, "internal error (Type); see logs for ..."
        return [AckError(ErrorCode.APPLICATION_INTERNAL_ERROR, error[:200])]
    out: list[AckError] = []
    for part in error.split("; ")[:MAX_ERR]:
        if part.startswith("and ") and part.endswith(" more"):
            continue
        found = _PROBLEM.match(part)
        segment, sequence, field, reason = (
            (found.group(1), found.group(2), found.group(3), found.group(4)) if found
            else (None, None, None, part))
        out.append(AckError(_code(reason), reason[:200], segment,
                            int(sequence) if sequence else None,
                            int(field) if field else None))
    return out


def _code(reason: str) -> ErrorCode:
    text = reason.lower()
    if "missing" in text or "empty" in text or "holds no" in text:
        return ErrorCode.REQUIRED_FIELD_MISSING
    if "unknown" in text:
        return ErrorCode.TABLE_VALUE_NOT_FOUND
    return ErrorCode.DATA_TYPE_ERROR


def build_app_ack(message_id: str, found: Ended, accept_ack: str) -> bytes:
    """The application ACK for one processed message (see module docstring)."""
    msg = parse_message(found.body)
    code = _CODES[found.status]
    if found.status == inbox.STATUS_FAILED and (found.error or "").startswith(INTERNAL):
        code = AckCode.AR
    return build_ack(msg, code, errors=problems(found.error),
                     control_id=control_id(f"{ACK_TYPE}:{message_id}", 1), now=found.processed_at,
                     accept_ack=accept_ack, application_ack="NE")


class Hl7v2AckSender(MllpPeer):
    """Sends the deferred application ACKs routed to one return address."""

    kind = "hl7v2-ack"

    def __init__(self, dest: Hl7v2AckDestination, limits: Limits, *,
                 engine: Engine | None = None) -> None:
        super().__init__(dest, limits)
        self.dest = dest
        self.engine = engine

    def _messages(self, items: list[Claimed]) -> dict[int, bytes | Attempt]:
        if self.engine is None:
            raise ConfigurationError(f"{self.name}: the ACK sender needs the database")
        found = ended(self.engine, [i.res_id for i in items if i.res_type == ACK_TYPE])
        out: dict[int, bytes | Attempt] = {}
        for item in items:
            item.message_id = item.res_id  # dead letters and lineage name the inbound message
            message = found.get(item.res_id)
            if item.res_type != ACK_TYPE:
                out[item.id] = Attempt(Verdict.OK, "not an HL7v2 ACK", skipped=True)
            elif message is None:
                out[item.id] = Attempt(Verdict.OK, "message no longer stored", skipped=True)
            elif message.status not in _CODES:
                out[item.id] = Attempt(Verdict.RETRY, "message not processed yet")
            else:
                try:
                    out[item.id] = build_app_ack(item.res_id, message, self.dest.accept_ack)
                except (Hl7ParseError, ValueError) as exc:
                    out[item.id] = Attempt(Verdict.FATAL, f"cannot build the ACK: {exc}")
        return out

    def deliver(self, items: list[Claimed], stop: threading.Event | None = None
                ) -> dict[int, Attempt]:
        built = self._messages(items)
        return self.send_each(items, lambda item: built[item.id], stop)

    def send(self, message: bytes) -> Attempt:
        if self.dest.accept_ack == "AL":
            return read_ack(self._conn(), message, self.breaker)
        try:
            self._conn().send(message)
        except RetriableDeliveryError as exc:
            self.breaker.record(False)
            return Attempt(Verdict.RETRY, exc.message)
        self.breaker.record(True)
        return OK

    def check(self) -> str:
        return f"{self.name}: {self.connects()}"

    def preview(self, items: list[Claimed]) -> dict[str, Any]:
        messages, skipped = [], []
        for item in items:
            built = self._messages([item])[item.id]
            if isinstance(built, Attempt):
                skipped.append({"outboxId": item.id, "reason": built.reason})
            else:
                messages.append(built.decode("latin-1").replace("\r", "\n"))
        return {"destination": self.name, "messages": messages, "skipped": skipped}
