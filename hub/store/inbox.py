"""The inbox: raw inbound messages, written durably before any acknowledgement.

``receive`` is the only write on the acknowledge path. Work is shared between processes by
``claim``: on PostgreSQL ``FOR UPDATE SKIP LOCKED`` inside the caller's transaction (a crash rolls
the claim back); on SQLite, which has one writer at a time, the caller's transaction already
holds the database write lock (``db.write_tx`` begins IMMEDIATE).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import uuid_utils
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from hub.contracts import RawMessage
from hub.store.db import as_utc, is_postgres, utcnow, write_tx
from hub.store.dialect import MARK, driver_cursor, time_reader, time_writer
from hub.store.models import InboundMessage

T = InboundMessage.__table__  # type: ignore[attr-defined]

STATUS_RECEIVED = "received"
STATUS_PROCESSED = "processed"
STATUS_PARTIAL = "partial"
STATUS_FAILED = "failed"
STATUS_QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the acknowledger needs: the message id, and whether it was a repeat."""

    message_id: str
    duplicate: bool
    status: str
    reply: bytes | None = None


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def new_message_id() -> str:
    """A new inbound message id: a UUIDv7 (RFC 9562 §5.7), whose first 48 bits are the Unix
    time in milliseconds and the rest random.

    Time-ordered, unlike UUIDv4, so the B-tree indexes keyed by message id
    (``inbound_message.id``, ``resource.message_id``, the dead letters') take each new id at
    their right edge instead of on a random page. With UUIDv4 one 512-message HL7v2 commit
    rewrote 227 pages of ``ix_resource_message_id`` alone, of the 1,483 it wrote (a database
    of 20,000 messages; ``python -m bench.commit_pages``). ``uuid_utils`` (Rust) makes one in
    ~0.2 us, ``uuid.uuid4`` ~1.9 us (an os.urandom system call each). Ids stay opaque to
    clients: nothing reads the time back out of them.
    """
    return str(uuid_utils.uuid7())


def receive(
    engine: Engine,
    *,
    source: str,
    channel: str,
    content_type: str,
    body: bytes,
    dedupe_key: str | None = None,
    client: str | None = None,
    status: str = STATUS_RECEIVED,
    error: str | None = None,
    reply: bytes | None = None,
    traceparent: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Receipt:
    """Durably store one inbound message and return its id; commit happens before returning.

    ``dedupe_key`` (Idempotency-Key, vendor event id, MSH-3+4+10) defaults to the body hash. A
    repeat returns the first message's receipt with ``duplicate=True`` and stores nothing.
    ``status=failed`` with ``error`` keeps a message that was refused at the door.
    """
    digest = body_hash(body)
    key = dedupe_key or f"sha256:{digest}"
    existing = find_by_dedupe(engine, source, key)
    if existing is not None:
        return existing
    message_id = new_message_id()
    row = {
        "id": message_id, "source": source, "channel": channel, "received_at": utcnow(),
        "content_type": content_type, "body": body, "sha256": digest, "dedupe_key": key,
        "status": status, "error": error, "client": client, "reply": reply, "attempts": 0,
        "traceparent": traceparent, "meta": meta_text(meta),
    }
    try:
        with write_tx(engine) as conn:
            conn.execute(T.insert(), row)
    except IntegrityError:
        # A concurrent twin won the unique (source, dedupe_key) race: answer with its receipt.
        twin = find_by_dedupe(engine, source, key)
        if twin is None:
            raise
        return twin
    return Receipt(message_id, False, status, reply)


def find_by_dedupe(engine: Engine, source: str, key: str) -> Receipt | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(T.c.id, T.c.status, T.c.reply).where(T.c.source == source,
                                                        T.c.dedupe_key == key)
        ).first()
    return None if row is None else Receipt(row.id, True, row.status, row.reply)


@dataclass(frozen=True, slots=True)
class Stored:
    """A message already in the inbox under a dedupe key: its receipt and arrival time."""

    receipt: Receipt
    received_at: datetime


# The group-commit channels' two statements (every MLLP/MQTT batch runs both) go to the driver
# on the transaction's cursor: SQLAlchemy Core's construction of an IN list, cache key,
# compilation and dispatch cost more than SQLite running them (hub.store.dialect.driver_cursor).
# Values are bound as Core binds them: SQLite's datetimes as its DATETIME type writes and
# reads them.
_COLUMNS = ("id", "source", "channel", "received_at", "content_type", "body", "sha256",
            "dedupe_key", "status", "error", "client", "reply", "attempts", "traceparent",
            "meta")
_INSERT = (f"INSERT INTO {T.name} ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join(['{m}'] * len(_COLUMNS))})")
_FIND = (f"SELECT id, status, reply, received_at, dedupe_key FROM {T.name} "
         "WHERE source = {m} AND dedupe_key IN ({marks})")
_AT = _COLUMNS.index("received_at")


def find_keys(conn: Connection, source: str, keys: list[str]) -> dict[str, Stored]:
    """The messages stored under any of ``keys`` (one query; for channels that batch writes)."""
    if not keys:
        return {}
    mark = MARK[conn.dialect.name]
    sql = _FIND.format(m=mark, marks=", ".join([mark] * len(keys)))
    with driver_cursor(conn, "inbox dedupe lookup") as cursor:
        cursor.execute(sql, (source, *keys))
        rows = cursor.fetchall()
    read = time_reader(T.c.received_at.type, conn.dialect)
    return {key: Stored(Receipt(mid, True, status, None if reply is None else bytes(reply)),
                        as_utc(read(at)) or utcnow())
            for mid, status, reply, at, key in rows}


def insert_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert prepared inbox rows in the caller's transaction (group commit: one fsync for all).

    Each row has the columns ``receive`` writes; ``id``, ``received_at``, ``sha256`` and
    ``attempts`` are filled in when missing. The caller checked the dedupe keys first (same
    transaction), so the unique (source, dedupe_key) constraint only trips on a bug (raised as
    SQLAlchemy's IntegrityError, as from any statement).
    """
    if not rows:
        return
    now = utcnow()
    values: list[list[Any]] = []
    bind = time_writer(T.c.received_at.type, conn.dialect)
    for row in rows:
        if "id" not in row:
            row["id"] = new_message_id()
        row.setdefault("received_at", now)
        if "sha256" not in row:
            row["sha256"] = body_hash(row["body"])
        row.setdefault("attempts", 0)
        if "dedupe_key" not in row:
            row["dedupe_key"] = f"sha256:{row['sha256']}"
        value = list(map(row.get, _COLUMNS))
        value[_AT] = bind(value[_AT])
        values.append(value)
    with driver_cursor(conn, "inbox insert") as cursor:
        cursor.executemany(_INSERT.format(m=MARK[conn.dialect.name]), values)


def set_reply(engine: Engine, message_id: str, reply: bytes) -> None:
    """Remember the acknowledgement sent, so a duplicate gets the very same answer."""
    with write_tx(engine) as conn:
        conn.execute(update(T).where(T.c.id == message_id).values(reply=reply))


# The worker's two reads of every batch, claim and take, as driver SQL on the transaction's
# cursor like the group commit's statements above: through SQLAlchemy Core (the select built,
# its IN list expanded, compiled and dispatched, the rows through its result machinery) a claim
# of 8 cost 225 us and a take of 8 247 us (SQLite, timeit, best of 5), about 60 us a message
# when the worker keeps up with a stream of small batches.
# The claim reads each body's size first (``length`` of a BLOB/bytea reads no content) and then
# the bodies of the messages that fit in ``CLAIM_BYTES``, at least one: a worker claims up to
# HUB_WORKER_BATCH messages (512), and that many bodies of the 5 MB the API accepts would be
# 2.5 GB in memory, most of it handed back (a batch stops after 0.25 s of preparing: ~10,000
# canonical readings, 1-2 MB of JSON).
CLAIM_BYTES = 16 * 1024 * 1024
_CLAIM = ("SELECT id, source, content_type, length(body), received_at, traceparent, meta, seq "
          f"FROM {T.name} WHERE status = {{m}}{{only}} ORDER BY seq LIMIT {{m}}{{lock}}")
_BODIES = f"SELECT id, body FROM {T.name} WHERE id IN ({{marks}})"
_TAKE = f"SELECT id FROM {T.name} WHERE id IN ({{marks}}) AND status = {{m}}{{lock}}"
_LOCKED = " FOR UPDATE SKIP LOCKED"
_IDS_PER_STATEMENT = 500  # bound ids a statement (SQLite allows 32,766 variables)


def claim(conn: Connection, limit: int, only: list[str] | None = None, *, lock: bool = True,
          max_bytes: int = CLAIM_BYTES) -> list[RawMessage]:
    """Received messages for this transaction to process, oldest first (or just the messages
    ``only`` names, still waiting); see module docstring. At most ``limit`` messages, and no
    more than fit in ``max_bytes`` of bodies (but always one). ``lock=False`` only reads (no
    row locks on PostgreSQL): the caller prepares them outside the write transaction and takes
    them with ``take`` when it commits."""
    mark = MARK[conn.dialect.name]
    locking = _LOCKED if lock and conn.dialect.name == "postgresql" else ""
    parts = ([None] if only is None
             else [only[i:i + _IDS_PER_STATEMENT] for i in range(0, len(only), _IDS_PER_STATEMENT)])
    rows: list[Any] = []
    with driver_cursor(conn, "inbox claim") as cursor:
        for part in parts:
            where = "" if part is None else f" AND id IN ({', '.join([mark] * len(part))})"
            cursor.execute(_CLAIM.format(m=mark, only=where, lock=locking),
                           (STATUS_RECEIVED, *(part or ()), limit))
            rows += cursor.fetchall()
        if len(parts) > 1:  # (the oldest of all the parts: a long ``only`` is read in parts)
            rows = sorted(rows, key=lambda row: row[-1])[:limit]
    size = 0
    for count, row in enumerate(rows):
        size += row[3] or 0
        if count and size > max_bytes:
            rows = rows[:count]
            break
    found = bodies(conn, [row[0] for row in rows])
    read = time_reader(T.c.received_at.type, conn.dialect)
    return [RawMessage(mid, source, content_type, found[mid], as_utc(read(at)) or utcnow(),
                       traceparent, _meta(meta))
            for mid, source, content_type, _size, at, traceparent, meta, _ in rows]


def waiting(conn: Connection, limit: int, skip: Collection[str] = ()
            ) -> list[tuple[RawMessage, int]]:
    """Received messages, oldest first, except those in ``skip``, without their bodies (the
    body's size instead): a preparing process reads the bodies (``bodies``). Only reads."""
    query = (
        select(T.c.id, T.c.source, T.c.content_type, T.c.received_at, T.c.traceparent,
               T.c.meta, func.length(T.c.body).label("size"))
        .where(T.c.status == STATUS_RECEIVED)
        .order_by(T.c.seq)
        .limit(limit)
    )
    if skip:
        query = query.where(T.c.id.not_in(list(skip)))
    return [(RawMessage(r.id, r.source, r.content_type, b"", as_utc(r.received_at) or utcnow(),
                        r.traceparent, _meta(r.meta)), int(r.size or 0))
            for r in conn.execute(query).all()]


def meta_text(meta: dict[str, Any] | None) -> str | None:
    """A message's channel metadata as the ``meta`` column stores it."""
    return orjson.dumps(meta).decode() if meta else None


def _meta(text: str | None) -> dict[str, Any] | None:
    found: dict[str, Any] | None = orjson.loads(text) if text else None
    return found


def _by_ids(conn: Connection, what: str, template: str, message_ids: list[str],
            after: tuple[Any, ...] = ()) -> list[Any]:
    """The rows of ``template`` (a statement with ``{marks}`` for an IN list of ids, and ``{m}``
    and ``{lock}`` if it needs them) over ``message_ids``, run in parts of
    ``_IDS_PER_STATEMENT`` on the driver's cursor; ``after``: parameters after the ids."""
    mark = MARK[conn.dialect.name]
    lock = _LOCKED if conn.dialect.name == "postgresql" else ""
    rows: list[Any] = []
    with driver_cursor(conn, what) as cursor:
        for start in range(0, len(message_ids), _IDS_PER_STATEMENT):
            part = message_ids[start:start + _IDS_PER_STATEMENT]
            cursor.execute(template.format(marks=", ".join([mark] * len(part)), m=mark,
                                           lock=lock), (*part, *after))
            rows += cursor.fetchall()
    return rows


def take(conn: Connection, message_ids: list[str]) -> set[str]:
    """Of ``message_ids`` (read earlier without locks), those still received, now this
    transaction's: on PostgreSQL locked ``FOR UPDATE SKIP LOCKED`` (a message another worker
    holds is not taken), on SQLite under the write lock the caller's transaction holds."""
    return {row[0] for row in _by_ids(conn, "inbox take", _TAKE, message_ids,
                                      (STATUS_RECEIVED,))}


def bodies(conn: Connection, message_ids: list[str]) -> dict[str, bytes]:
    """The bodies of these messages, by id (through the driver's cursor, as ``claim``)."""
    return {mid: bytes(body) for mid, body in _by_ids(conn, "inbox bodies", _BODIES,
                                                      message_ids)}


def finish(
    conn: Connection, message_id: str, status: str, *, error: str | None,
    resource_refs: list[str], notes: str | None = None,
) -> None:
    """Record the outcome of processing, in the same transaction as the resources."""
    refs = orjson.dumps(resource_refs).decode() if resource_refs else None
    finish_many(conn, [Finished(message_id, status, error, notes, refs)])


@dataclass(frozen=True, slots=True)
class Finished:
    """The outcome of processing one message, as ``finish_many`` records it; ``refs`` is the
    JSON list of the resources it produced (None: none)."""

    message_id: str
    status: str
    error: str | None
    notes: str | None
    refs: str | None


_FINISH = ("UPDATE inbound_message SET status = {m}, error = {m}, notes = {m}, "
           "processed_at = {m}, attempts = attempts + 1, resource_refs = {m} WHERE id = {m}")


def finish_many(conn: Connection, outcomes: list[Finished]) -> None:
    """``finish`` for many messages in one statement (executemany), same transaction."""
    if not outcomes:
        return
    when = time_writer(T.c.processed_at.type, conn.dialect)(utcnow())
    params = [(o.status, o.error, o.notes, when, o.refs, o.message_id) for o in outcomes]
    marker = "%s" if is_postgres(conn.engine) else "?"
    statement = _FINISH.format(m=marker)
    if len(params) == 1:
        conn.exec_driver_sql(statement, params[0])
    else:
        conn.exec_driver_sql(statement, params)


def requeue(engine: Engine, *, status: str, message_ids: list[str] | None = None) -> int:
    """Put messages of ``status`` (e.g. quarantined, failed) back in the queue (replay)."""
    with write_tx(engine) as conn:
        return requeue_in(conn, status=status, message_ids=message_ids)


def requeue_in(conn: Connection, *, status: str, message_ids: list[str] | None = None) -> int:
    """``requeue`` inside the caller's transaction."""
    query = update(T).where(T.c.status == status)
    if message_ids is not None:
        query = query.where(T.c.id.in_(message_ids))
    return int(conn.execute(query.values(status=STATUS_RECEIVED)).rowcount)


def get(engine: Engine, message_id: str) -> dict[str, Any] | None:
    """A message's status and lineage (no body: it may hold PHI and is served separately)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(T.c.id, T.c.source, T.c.channel, T.c.received_at, T.c.content_type,
                   T.c.sha256, T.c.status, T.c.error, T.c.notes, T.c.resource_refs,
                   T.c.processed_at,
                   T.c.attempts).where(T.c.id == message_id)
        ).first()
    if row is None:
        return None
    return {
        "id": row.id, "source": row.source, "channel": row.channel,
        "receivedAt": _iso(row.received_at), "contentType": row.content_type,
        "sha256": row.sha256, "status": row.status, "error": row.error,
        "notes": row.notes,
        "resources": orjson.loads(row.resource_refs) if row.resource_refs else [],
        "processedAt": _iso(row.processed_at), "attempts": row.attempts,
    }


def _iso(value: datetime | None) -> str | None:
    utc = as_utc(value)
    return None if utc is None else utc.isoformat()


def counts_by_status(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(T.c.status, func.count()).group_by(T.c.status)).all()
    return {r[0]: int(r[1]) for r in rows}
