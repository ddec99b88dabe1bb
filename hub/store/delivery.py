"""Draining the outbox: claim, finish (delivered / retry / dead / skipped), dead letters, replay.

Row life: ``pending`` → (claim) ``inflight`` → ``delivered`` | ``dead`` | ``skipped``, or back to
``pending`` with a later ``next_attempt_at`` (retry). An ``inflight`` row's ``next_attempt_at``
is its lease: a worker that dies (kill -9) leaves it ``inflight``, and once the lease passes the
row is claimable again. The destination may already hold that write, so every sender is
idempotent (PUT to the deterministic id, conditional create, idempotency keys, search before
create): at-least-once attempts, effectively-once results.

Fencing: a claim increments ``attempts``; a finish only applies where ``attempts`` still equals
the claimed value and the row is still ``inflight``, so a worker whose lease ran out cannot
overwrite the outcome of the worker that took over.

Order per patient (``order_key``): a row is claimable only if no earlier open row of the same
key and destination is waiting (retry not yet due, or in flight elsewhere). Earlier rows that are
due are claimed in the same batch, before it (ids ascending). On PostgreSQL the claim takes a
transaction-level advisory lock per destination, so concurrent workers see each other's claims
(``FOR UPDATE SKIP LOCKED`` alone would let a second worker take a patient's next row while the
first still holds the earlier one uncommitted); the lock is held for the claim statement only,
never during delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Engine

from hub.store import inbox
from hub.store.db import as_utc, is_postgres, utcnow, write_tx
from hub.store.dialect import insert_for
from hub.store.models import DeadLetter, OutboxItem, Resource

OUT = OutboxItem.__table__  # type: ignore[attr-defined]
DL = DeadLetter.__table__  # type: ignore[attr-defined]
R = Resource.__table__  # type: ignore[attr-defined]

PENDING, INFLIGHT, DELIVERED, DEAD, SKIPPED = "pending", "inflight", "delivered", "dead", "skipped"
OPEN = (PENDING, INFLIGHT)
# Literal, not bound: the planners use the partial indexes (migration 0003) only when the query's
# predicate visibly implies the index's ``status IN ('pending', 'inflight')``.
_OPEN_SQL: list[Any] = [literal_column(f"'{s}'") for s in OPEN]


def _is_open(column: Any) -> Any:
    return column.in_(_OPEN_SQL)


@dataclass(slots=True)
class Claimed:
    """One claimed outbox row with the resource's current content (None if it is gone)."""

    id: int
    res_type: str
    res_id: str
    version_id: int
    order_key: str
    attempts: int  # the fencing token: finish only if still equal
    created_at: datetime
    resource: dict[str, Any] | None
    current_version: int | None
    message_id: str | None

    @property
    def ref(self) -> str:
        return f"{self.res_type}/{self.res_id}"


@dataclass(slots=True)
class Result:
    """How one claimed row ends this attempt."""

    item: Claimed
    status: str  # delivered | pending (retry) | dead | skipped
    reason: str | None = None
    detail: dict[str, Any] | None = None
    retry_at: datetime | None = None
    stage: str = "deliver"


def claim(
    engine: Engine, destination: str, limit: int, *, lease_secs: float,
    patient_cap: int | None = None, now: datetime | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due rows of ``destination``, oldest first (see module docstring).

    ``patient_cap`` keeps at most that many rows of one ``order_key`` in the claim.
    """
    now = now or utcnow()
    with write_tx(engine) as conn:
        if is_postgres(engine):
            # The claim must walk ix_outbox_open in id order and stop at LIMIT. Two plans
            # measured instead: psycopg prepares a statement from its 5th execution and the
            # generic plan sorted every open row (260 ms vs 12 ms per claim of 500); and after
            # autovacuum's statistics said few rows are due, the due-time index plus a sort of
            # every due row (590 ms). Custom plans, no sort: the id-ordered walk is left.
            conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            conn.execute(text("SET LOCAL enable_sort = off"))
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                         {"k": f"hub.outbox:{destination}"})
        p = OUT.alias("p")
        # OFFSET 0 keeps PostgreSQL from flattening this into an anti-join: with the stale
        # statistics of a busy outbox it then scanned every open row once per candidate
        # (measured: 5 s per claim of 500). As a per-row subplan it is an index probe on
        # (destination, order_key, id) of ix_outbox_open_key.
        waiting = (
            select(literal(1)).where(
                p.c.destination == OUT.c.destination, p.c.order_key == OUT.c.order_key,
                p.c.id < OUT.c.id, _is_open(p.c.status), p.c.next_attempt_at > now)
            .offset(0)
            .exists()
        )
        # The content comes with the claim (a primary-key join per row): a separate
        # ``(type, id) IN (...)`` read cost 8x the claim itself on SQLite.
        query = (
            select(OUT.c.id, OUT.c.res_type, OUT.c.res_id, OUT.c.version_id, OUT.c.order_key,
                   OUT.c.attempts, OUT.c.created_at, R.c.content,
                   R.c.version_id.label("current_version"), R.c.message_id)
            .select_from(OUT.outerjoin(R, and_(R.c.res_type == OUT.c.res_type,
                                               R.c.res_id == OUT.c.res_id)))
            .where(OUT.c.destination == destination, _is_open(OUT.c.status),
                   OUT.c.next_attempt_at <= now, ~waiting)
            .order_by(OUT.c.id)
            .limit(limit * 2 if patient_cap else limit)
        )
        if is_postgres(engine):
            query = query.with_for_update(skip_locked=True, of=OUT)
        rows = conn.execute(query).all()
        if patient_cap:
            per_key: dict[str, int] = {}
            full: set[str] = set()
            chosen = []
            for r in rows:
                if r.order_key in full:
                    continue
                per_key[r.order_key] = per_key.get(r.order_key, 0) + 1
                if per_key[r.order_key] >= patient_cap:
                    full.add(r.order_key)
                chosen.append(r)
                if len(chosen) == limit:
                    break
            rows = chosen
        if not rows:
            return []
        lease = now + timedelta(seconds=lease_secs)
        ids = [r.id for r in rows]
        for chunk in _chunks(ids, 900):
            conn.execute(update(OUT).where(OUT.c.id.in_(chunk)).values(
                status=INFLIGHT, attempts=OUT.c.attempts + 1, next_attempt_at=lease))
    return [Claimed(r.id, r.res_type, r.res_id, r.version_id, r.order_key, r.attempts + 1,
                    as_utc(r.created_at) or now,
                    orjson.loads(r.content) if r.content is not None else None,
                    r.current_version, r.message_id) for r in rows]


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def finish(engine: Engine, destination: str, results: Sequence[Result]) -> int:
    """Record the outcomes of one delivery attempt in one transaction; returns rows applied.

    Dead rows get a dead letter (kind ``delivery``) with the reason and the destination's answer
    (``detail``, e.g. its OperationOutcome). Stale results (fencing) are ignored.
    """
    if not results:
        return 0
    now = utcnow()
    applied = 0
    with write_tx(engine) as conn:
        fence = and_(OUT.c.id == bindparam("b_id"), OUT.c.attempts == bindparam("b_att"),
                     OUT.c.status == INFLIGHT)
        # Delivered rows, grouped by their fencing value: one ``id IN`` statement per group
        # (almost always one) instead of a statement per row.
        by_attempts: dict[int, list[int]] = {}
        for r in results:
            if r.status == DELIVERED:
                by_attempts.setdefault(r.item.attempts, []).append(r.item.id)
        for attempts, ids in by_attempts.items():
            for chunk in _chunks(ids, 900):
                stmt = update(OUT).where(OUT.c.id.in_(chunk), OUT.c.attempts == attempts,
                                         OUT.c.status == INFLIGHT)
                applied += _rowcount(conn.execute(stmt.values(
                    status=DELIVERED, delivered_at=now, last_error=None)))
        others = [r for r in results if r.status != DELIVERED]
        if others:
            stmt = update(OUT).where(fence).values(
                status=bindparam("b_status"), next_attempt_at=bindparam("b_next"),
                last_error=bindparam("b_error"))
            params = [{"b_id": r.item.id, "b_att": r.item.attempts, "b_status": r.status,
                       "b_next": r.retry_at or now, "b_error": r.reason} for r in others]
            applied += _rowcount(conn.execute(stmt, params))
        dead = [r for r in results if r.status == DEAD]
        if dead:
            ids = [r.item.id for r in dead]
            still = set(conn.execute(select(OUT.c.id).where(
                OUT.c.id.in_(ids), OUT.c.status == DEAD)).scalars())
            rows = [{"kind": "delivery", "message_id": r.item.message_id,
                     "outbox_id": r.item.id, "destination": destination,
                     "stage": r.stage, "reason": r.reason or "refused",
                     "detail": orjson.dumps(r.detail).decode() if r.detail else None,
                     "created_at": now} for r in dead if r.item.id in still]
            if rows:
                conn.execute(DL.insert(), rows)
    return applied


def _rowcount(result: Any) -> int:
    count = getattr(result, "rowcount", 0)
    return int(count) if isinstance(count, int) and count > 0 else 0


def counts(engine: Engine, destination: str | None = None) -> dict[str, dict[str, int]]:
    """Rows per destination and status."""
    query = select(OUT.c.destination, OUT.c.status, func.count()).group_by(
        OUT.c.destination, OUT.c.status)
    if destination:
        query = query.where(OUT.c.destination == destination)
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for dest, status, n in conn.execute(query):
            out.setdefault(dest, {})[status] = int(n)
    return out


def pending_preview(engine: Engine, destination: str, limit: int) -> list[Claimed]:
    """The next due rows with their content, without claiming them (dry run)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(OUT.c.id, OUT.c.res_type, OUT.c.res_id, OUT.c.version_id, OUT.c.order_key,
                   OUT.c.attempts, OUT.c.created_at, R.c.content, R.c.version_id.label("cur"),
                   R.c.message_id)
            .select_from(OUT.outerjoin(R, and_(R.c.res_type == OUT.c.res_type,
                                               R.c.res_id == OUT.c.res_id)))
            .where(OUT.c.destination == destination, _is_open(OUT.c.status))
            .order_by(OUT.c.id).limit(limit)).all()
    return [Claimed(r.id, r.res_type, r.res_id, r.version_id, r.order_key, r.attempts,
                    as_utc(r.created_at) or utcnow(),
                    orjson.loads(r.content) if r.content else None, r.cur, r.message_id)
            for r in rows]


# ---------------------------------------------------------------- dead letters and replay

def list_dead(engine: Engine, *, destination: str | None = None, kind: str | None = None,
              limit: int = 100, include_replayed: bool = False) -> list[dict[str, Any]]:
    """Dead letters, newest first, without ``detail`` (see :func:`get_dead`)."""
    query = (select(DL.c.id, DL.c.kind, DL.c.message_id, DL.c.outbox_id, DL.c.destination,
                    DL.c.stage, DL.c.reason, DL.c.created_at, DL.c.replayed_at)
             .order_by(DL.c.id.desc()).limit(limit))
    if not include_replayed:
        query = query.where(DL.c.replayed_at.is_(None))
    if destination:
        query = query.where(DL.c.destination == destination)
    if kind:
        query = query.where(DL.c.kind == kind)
    with engine.connect() as conn:
        return [_dead_row(dict(r._mapping)) for r in conn.execute(query)]


def get_dead(engine: Engine, dead_id: int) -> dict[str, Any] | None:
    """One dead letter with its detail and, for deliveries, the outbox row it stands for."""
    with engine.connect() as conn:
        row = conn.execute(select(DL).where(DL.c.id == dead_id)).first()
        if row is None:
            return None
        out = _dead_row(dict(row._mapping))
        out["detail"] = orjson.loads(row.detail) if row.detail else None
        if row.outbox_id is not None:
            item = conn.execute(select(OUT).where(OUT.c.id == row.outbox_id)).first()
            if item is not None:
                out["item"] = {"resource": f"{item.res_type}/{item.res_id}",
                               "version": item.version_id, "status": item.status,
                               "attempts": item.attempts}
    return out


def _dead_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "kind": row["kind"], "messageId": row["message_id"],
        "outboxId": row["outbox_id"], "destination": row["destination"], "stage": row["stage"],
        "reason": row["reason"], "createdAt": _iso(row["created_at"]),
        "replayedAt": _iso(row["replayed_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    utc = as_utc(value)
    return None if utc is None else utc.isoformat()


def replay_dead(engine: Engine, dead_ids: Sequence[int] | None = None, *,
                destination: str | None = None) -> int:
    """Replay dead letters (all open ones of ``destination`` when ``dead_ids`` is None).

    A delivery dead letter puts its outbox row back to ``pending`` (fresh attempts, due now);
    an inbound one requeues its message. Each is marked replayed; returns how many.
    """
    now = utcnow()
    with write_tx(engine) as conn:
        query = select(DL.c.id, DL.c.kind, DL.c.outbox_id, DL.c.message_id).where(
            DL.c.replayed_at.is_(None))
        if dead_ids is not None:
            query = query.where(DL.c.id.in_(list(dead_ids)))
        if destination:
            query = query.where(DL.c.destination == destination)
        rows = conn.execute(query).all()
        outbox_ids = [r.outbox_id for r in rows if r.kind == "delivery" and r.outbox_id]
        for chunk in _chunks(outbox_ids, 900):
            conn.execute(update(OUT).where(OUT.c.id.in_(chunk), OUT.c.status == DEAD).values(
                status=PENDING, attempts=0, next_attempt_at=now, last_error=None))
        messages = [r.message_id for r in rows if r.kind == "inbound" and r.message_id]
        if messages:
            inbox.requeue_in(conn, status=inbox.STATUS_FAILED, message_ids=messages)
        ids = [r.id for r in rows]
        for chunk in _chunks(ids, 900):
            conn.execute(update(DL).where(DL.c.id.in_(chunk)).values(replayed_at=now))
    return len(rows)


def enqueue_since(
    engine: Engine, destination: str, since: datetime, *,
    resource_types: Iterable[str] = (), wants: Any = None, chunk: int = 1000,
) -> int:
    """Queue every resource changed since ``since`` for ``destination`` (backfill / replay).

    Rows already queued for the same version are put back to ``pending`` unless open. ``wants``
    (a callable on the resource dict) filters by content. Returns how many were queued.
    """
    types = list(resource_types)
    total = 0
    last: tuple[str, str] = ("", "")
    while True:
        with engine.connect() as conn:
            query = (select(R.c.res_type, R.c.res_id, R.c.version_id, R.c.subject, R.c.content)
                     .where(R.c.last_updated >= since,
                            tuple_(R.c.res_type, R.c.res_id) > tuple_(literal(last[0]),
                                                                      literal(last[1])))
                     .order_by(R.c.res_type, R.c.res_id).limit(chunk))
            if types:
                query = query.where(R.c.res_type.in_(types))
            batch = conn.execute(query).all()
        if not batch:
            return total
        last = (batch[-1].res_type, batch[-1].res_id)
        now = utcnow()
        rows = [{"destination": destination, "res_type": r.res_type, "res_id": r.res_id,
                 "version_id": r.version_id,
                 "order_key": r.subject or f"{r.res_type}/{r.res_id}", "status": PENDING,
                 "attempts": 0, "next_attempt_at": now, "created_at": now}
                for r in batch if wants is None or wants(orjson.loads(r.content))]
        if rows:
            with write_tx(engine) as conn:
                stmt = insert_for(conn, OUT)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[OUT.c.destination, OUT.c.res_type, OUT.c.res_id,
                                    OUT.c.version_id],
                    set_={"status": PENDING, "attempts": 0, "next_attempt_at": now,
                          "last_error": None},
                    where=~_is_open(OUT.c.status))
                conn.execute(stmt, rows)
            total += len(rows)


# ---------------------------------------------------------------- lineage

def lineage(engine: Engine, refs: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Delivery status per resource per destination, for ``GET /messages/{id}``.

    For each ``Type/id`` in ``refs``: one entry per destination, describing its latest queued
    version (status, attempts, deliveredAt, lastError). Resources never routed have none.
    """
    keys = [tuple(ref.split("/", 1)) for ref in refs if "/" in ref]
    out: dict[str, list[dict[str, Any]]] = {}
    if not keys:
        return out
    with engine.connect() as conn:
        for chunk in _chunks(keys, 400):
            rows = conn.execute(
                select(OUT.c.res_type, OUT.c.res_id, OUT.c.destination, OUT.c.version_id,
                       OUT.c.status, OUT.c.attempts, OUT.c.delivered_at, OUT.c.last_error,
                       OUT.c.id)
                .where(tuple_(OUT.c.res_type, OUT.c.res_id).in_(chunk))
                .order_by(OUT.c.id)).all()
            latest: dict[tuple[str, str, str], Any] = {}
            for r in rows:
                latest[(r.res_type, r.res_id, r.destination)] = r
            for (rtype, rid, dest), r in latest.items():
                out.setdefault(f"{rtype}/{rid}", []).append({
                    "destination": dest, "version": r.version_id,
                    "status": PENDING if r.status == INFLIGHT else r.status,
                    "attempts": r.attempts, "deliveredAt": _iso(r.delivered_at),
                    "lastError": r.last_error})
    return out
