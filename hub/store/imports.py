"""Checkpoints of file imports (``hub import``): how far each file got, committed with its chunks.

``commit`` writes a chunk's inbox rows and moves the checkpoint in one transaction, so after a
crash the checkpoint names exactly the first item no committed message holds. Rows carry
deterministic dedupe keys (the import and the chunk's first position): a chunk already in the
inbox (a run repeated with ``--restart``) is not stored again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from hub.errors import HubError
from hub.store import inbox
from hub.store.db import is_postgres, utcnow, write_tx
from hub.store.models import ImportCheckpoint

T = ImportCheckpoint.__table__  # type: ignore[attr-defined]

RUNNING = "running"
DONE = "done"


@dataclass(slots=True)
class Checkpoint:
    """Where an import stands (``position``: see ImportCheckpoint)."""

    import_key: str
    source: str
    position: int = 0
    line: int = 0
    items: int = 0
    refused: int = 0
    messages: int = 0
    status: str = RUNNING


@dataclass(frozen=True, slots=True)
class Stored:
    """One committed inbox row: its message id, and whether it was there already."""

    message_id: str
    duplicate: bool


def open_import(engine: Engine, key: str, *, source: str, layout: str, file_sha256: str,
                path: str, size: int, restart: bool) -> tuple[Checkpoint, bool]:
    """The checkpoint of this import, created at the start (or reset by ``restart``); also
    whether an earlier run had started it."""
    now = utcnow()
    fresh = {"position": 0, "line": 0, "items": 0, "refused": 0, "messages": 0,
             "status": RUNNING, "started_at": now, "updated_at": now, "path": path}
    with write_tx(engine) as conn:
        row = conn.execute(select(T).where(T.c.import_key == key)).first()
        if row is None:
            conn.execute(T.insert(), {"import_key": key, "source": source, "layout": layout,
                                      "file_sha256": file_sha256, "size": size, **fresh})
            return Checkpoint(key, source), False
        if restart:
            conn.execute(update(T).where(T.c.import_key == key).values(**fresh))
            return Checkpoint(key, source), True
        conn.execute(update(T).where(T.c.import_key == key).values(path=path))
    return Checkpoint(key, source, row.position, row.line, row.items, row.refused, row.messages,
                      row.status), True


def commit(engine: Engine, checkpoint: Checkpoint, rows: list[dict[str, Any]], *,
           position: int, line: int, items: int, refused: int, done: bool) -> list[Stored]:
    """Store ``rows`` (inbox rows without ids) and move the checkpoint, in one transaction.

    ``checkpoint`` is updated in place. Raises HubError when the stored checkpoint is not where
    this run left it (another ``hub import`` of the same file is running)."""
    stored: list[Stored] = []
    with write_tx(engine) as conn:
        query = select(T.c.position).where(T.c.import_key == checkpoint.import_key)
        if is_postgres(engine):
            query = query.with_for_update()
        if conn.execute(query).scalar_one() != checkpoint.position:
            raise HubError("the checkpoint moved under this import: another hub import of "
                            "the same file is running")
        existing = inbox.find_keys(conn, checkpoint.source, [r["dedupe_key"] for r in rows])
        new: list[dict[str, Any]] = []
        for row in rows:
            twin = existing.get(row["dedupe_key"])
            if twin is not None:
                stored.append(Stored(twin.receipt.message_id, True))
                continue
            row["id"] = inbox.new_message_id()
            new.append(row)
            stored.append(Stored(row["id"], False))
        inbox.insert_many(conn, new)
        moved = Checkpoint(checkpoint.import_key, checkpoint.source, position, line,
                           checkpoint.items + items, checkpoint.refused + refused,
                           checkpoint.messages + len(new), DONE if done else RUNNING)
        conn.execute(update(T).where(T.c.import_key == checkpoint.import_key).values(
            position=moved.position, line=moved.line, items=moved.items, refused=moved.refused,
            messages=moved.messages, status=moved.status, updated_at=utcnow()))
    checkpoint.position, checkpoint.line = moved.position, moved.line
    checkpoint.items, checkpoint.refused = moved.items, moved.refused
    checkpoint.messages, checkpoint.status = moved.messages, moved.status
    return stored
