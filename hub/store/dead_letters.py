"""Dead letters: what could not be processed or delivered, with the reason, for replay."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from hub.store.db import utcnow
from hub.store.models import DeadLetter

DL = DeadLetter.__table__  # type: ignore[attr-defined]


def add_inbound(conn: Connection, message_id: str, stage: str, reason: str) -> None:
    """Dead-letter an inbound message (its raw bytes stay in the inbox)."""
    conn.execute(DL.insert(), {"kind": "inbound", "message_id": message_id, "stage": stage,
                               "reason": reason, "created_at": utcnow()})


def list_open(conn: Connection, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(DL).where(DL.c.replayed_at.is_(None)).order_by(DL.c.id.desc()).limit(limit)
    if kind:
        query = query.where(DL.c.kind == kind)
    return [dict(r._mapping) for r in conn.execute(query)]
