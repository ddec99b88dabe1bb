"""Replies owed to a sender once its message is processed: HL7v2 deferred application ACKs.

In HL7v2 enhanced mode the door answers the accept ACK (CA) on the connection; the application
ACK (AA/AE/AR), when MSH-16 asks for it, is owed after processing (``hub.hl7v2.ack``). The
worker calls :func:`owed_acks` in the transaction that records the message's outcome, so the
obligation is durable exactly when the outcome is: an outbox row (type :data:`ACK_TYPE`, id the
inbound message id) for the ``hl7v2-ack`` destination whose ``match`` takes the sender
(MSH-3/MSH-4). The sync worker then delivers it like any outbox row (retries, backoff,
circuit, dead letters, replay; ``hub.sync.hl7ack``); ``order_key`` is the sender, so one
sender's ACKs go out in the order its messages were processed.

Only finished messages are answered: a quarantined one is answered once an assignment releases
and it is processed. One application ACK per message: reprocessing (a replayed dead letter)
queues none again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from hub.contracts import RawMessage
from hub.hl7v2 import Hl7ParseError, Outcome, deferred_application_ack, parse_message
from hub.store import inbox
from hub.store.resources import Written
from hub.sync.config import AckSenders

log = logging.getLogger("hub.sync.replies")

ACK_TYPE = "hl7v2-ack"
HL7V2_SOURCE = "hl7v2"
_FINISHED = {inbox.STATUS_PROCESSED: Outcome.ACCEPTED, inbox.STATUS_PARTIAL: Outcome.DATA_ERROR,
             inbox.STATUS_FAILED: Outcome.DATA_ERROR}
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class AckRoute:
    """An ``hl7v2-ack`` destination and the senders whose ACKs it takes."""

    destination: str
    match: AckSenders


def owed_acks(routes: Sequence[AckRoute], raw: RawMessage, status: str
              ) -> list[tuple[str, Written]]:
    """The outbox row owed for ``raw`` now that it ended ``status`` (none, or one)."""
    outcome = _FINISHED.get(status)
    if not routes or raw.source != HL7V2_SOURCE or outcome is None:
        return []
    try:
        msg = parse_message(raw.body)
    except Hl7ParseError:
        return []  # refused at the door: its CR/AR was the answer
    if deferred_application_ack(msg, outcome) is None:
        return []
    application, facility = msg.msh.component(3, 1).strip(), msg.msh.component(4, 1).strip()
    for route in routes:
        if route.match.matches(application, facility):
            sender = f"{ACK_TYPE}:{application}|{facility}"[:128]
            return [(route.destination, Written(ACK_TYPE, raw.id, 1, sender))]
    if (application, facility) not in _warned:  # once per sender and process: not per message
        _warned.add((application, facility))
        log.warning("an HL7v2 sender asks for application ACKs but no hl7v2-ack destination "
                    "matches it (MSH-3 %r, MSH-4 %r): none is sent", application[:40],
                    facility[:40])
    return []
