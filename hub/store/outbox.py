"""The transactional outbox: rows written in the same transaction as the resources they carry.

Sync workers drain it (the sync issue fills that in); ``order_key`` keeps delivery in order per
patient while letting different patients proceed independently.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from hub.store.db import utcnow
from hub.store.dialect import insert_for
from hub.store.models import OutboxItem
from hub.store.resources import Written

OUT = OutboxItem.__table__  # type: ignore[attr-defined]


def enqueue(conn: Connection, items: list[tuple[str, Written]]) -> int:
    """Queue (destination, resource version) pairs; a pair already queued is not queued again."""
    if not items:
        return 0
    now = utcnow()
    rows = [
        {"destination": dest, "res_type": w.res_type, "res_id": w.res_id,
         "version_id": w.version_id, "order_key": w.subject or f"{w.res_type}/{w.res_id}",
         "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
        for dest, w in items
    ]
    conn.execute(insert_for(conn, OUT).on_conflict_do_nothing(), rows)
    return len(rows)
