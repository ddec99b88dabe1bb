"""What a reply to an inbound message needs from the inbox: its bytes and how it ended.

Read by the sync worker when it delivers an HL7v2 deferred application ACK (``hub.sync.hl7ack``):
the ACK is rebuilt from the stored message and outcome at each attempt, so nothing but the
outbox row has to be kept for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from hub.store.db import as_utc
from hub.store.models import InboundMessage

T = InboundMessage.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Ended:
    """An inbound message and its recorded outcome."""

    body: bytes
    status: str
    error: str | None
    processed_at: datetime | None


def ended(engine: Engine, message_ids: Sequence[str]) -> dict[str, Ended]:
    """The messages among ``message_ids`` still stored, by id."""
    if not message_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(T.c.id, T.c.body, T.c.status, T.c.error, T.c.processed_at)
            .where(T.c.id.in_(list(set(message_ids))))).all()
    return {r.id: Ended(bytes(r.body), r.status, r.error, as_utc(r.processed_at)) for r in rows}
