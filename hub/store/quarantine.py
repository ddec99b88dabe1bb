"""What quarantined messages wait for, and releasing only those a registry change concerns.

A message is quarantined (``inbox.STATUS_QUARANTINED``) when none of its readings could be
placed for want of identity: an identifier not registered (identity mode lookup), or a device
with no assignment covering a reading's time. ``hold`` records, in the transaction that
quarantines it, the identity keys ``(type, system, value)`` it waits for, one ``inbox_hold`` row
each (a message may wait for several: a reading naming an unknown cuff and an unknown patient
waits for both; an HL7v2 message's readings may name several devices); an unassigned device waits
under the identifier the reading names it by. ``release`` puts back in the queue the quarantined
messages waiting for any of the keys a registry change touched and drops their holds, so an
enrolment costs work in proportion to the messages it concerns, not to the whole quarantine.
A released message that is still unplaced (its other identifier is still unknown, or the new
assignment does not cover it) is quarantined again with what it waits for now.

Who releases: ``hub.identity.admin`` (an operator registers a device or patient: all its
identifiers; assigns or unassigns a device: all the device's identifiers),
``hub.identity.resolver`` (identifiers a message binds for the first time: a Patient or Device
it states, one a create-mode source sees first, an ADT^A40 merge), and ``hub.pipeline.runs``
(the identifiers a commit of prepared messages registers); the pipeline's only when some source
is in identity mode lookup. Messages leave quarantine through ``release`` (``inbox.requeue`` of
quarantined messages would leave their holds behind: inert, since a release matches the status
too, and ``hold`` replaces a message's holds when it is quarantined again).

A table rather than a column of ``inbound_message``: a message may wait for several keys, and a
release finds its messages by key through the index ``ix_inbox_hold_key`` (one probe per key)
instead of scanning the quarantine. The key ``ANY`` means "any registry change": the migration
that made this table (0010) gives it to every message quarantined before, so those are released
by the next change, whatever it touches, as they always were; ``hold`` uses it too for a message
whose keys cannot be stored (longer than the registry's columns: no registration can resolve
them either) or are not known.

PostgreSQL (READ COMMITTED): a worker that finds a key unresolved and a registry change that
resolves it could each miss the other's uncommitted write (the worker quarantines a message the
change's release did not see: stranded until another change to that key). So the worker calls
``awaiting(key)`` before its decisive read, which takes a shared transaction-level advisory lock
on the key, and ``release`` locks the keys of a change (exclusive) before it releases: one of them
waits for the other's commit, and then sees it. SQLite has one writer at a time: no lock needed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from hub.store.db import is_postgres
from hub.store.inbox import STATUS_QUARANTINED, STATUS_RECEIVED
from hub.store.models import InboundMessage, InboxHold

IdentityKey = tuple[str, str, str]  # (resource type, identifier system, identifier value)

H = InboxHold.__table__  # type: ignore[attr-defined]
M = InboundMessage.__table__  # type: ignore[attr-defined]
ANY: IdentityKey = ("*", "", "")
_TYPE_LEN, _TEXT_LEN = 16, 200  # inbox_hold's columns, as registry_identifier's
_CHUNK = 1000  # message ids per statement (bind parameters are limited)


def _storable(key: IdentityKey) -> bool:
    return len(key[0]) <= _TYPE_LEN and len(key[1]) <= _TEXT_LEN and len(key[2]) <= _TEXT_LEN


def hold(conn: Connection, message_id: str, keys: Iterable[IdentityKey]) -> None:
    """Record (replacing any earlier record) that ``message_id``, quarantined in this
    transaction, waits for ``keys``; none, or one that cannot be stored: ``ANY``."""
    rows = {k if _storable(k) else ANY for k in keys} or {ANY}
    conn.execute(delete(H).where(H.c.message_id == message_id))
    conn.execute(insert(H), [{"message_id": message_id, "res_type": t, "system": s, "value": v}
                             for t, s, v in sorted(rows)])


def release(conn: Connection, keys: Iterable[IdentityKey]) -> int:
    """Put the quarantined messages waiting for any of ``keys`` (or for any change) back in the
    queue, in the caller's transaction, and drop their holds; returns how many. On PostgreSQL
    the keys are locked first (``_lock_for_release``)."""
    keys = list(keys)
    _lock_for_release(conn, keys)
    wanted = sorted({k for k in keys if _storable(k)} | {ANY})
    # One index probe per key (ix_inbox_hold_key), then the messages by id: written as
    # ``(res_type, system, value) IN (...)`` or as a subquery of the UPDATE, SQLite scanned the
    # holds, or every quarantined message.
    found = conn.execute(select(H.c.message_id).distinct().where(or_(*(
        and_(H.c.res_type == t, H.c.system == s, H.c.value == v) for t, s, v in wanted)))
    ).scalars().all()
    moved: list[str] = []
    for chunk in _chunks(sorted(found)):
        moved += conn.execute(
            update(M).where(M.c.id.in_(chunk), M.c.status == STATUS_QUARANTINED)
            .values(status=STATUS_RECEIVED).returning(M.c.id)).scalars().all()
    _drop(conn, moved)
    return len(moved)


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _drop(conn: Connection, message_ids: list[str]) -> None:
    for chunk in _chunks(message_ids):
        conn.execute(delete(H).where(H.c.message_id.in_(chunk)))


def waits(conn: Connection, message_id: str) -> list[IdentityKey]:
    """What ``message_id`` waits for, sorted (nothing: it is not quarantined)."""
    rows = conn.execute(select(H.c.res_type, H.c.system, H.c.value)
                        .where(H.c.message_id == message_id)
                        .order_by(H.c.res_type, H.c.system, H.c.value)).all()
    return [(r[0], r[1], r[2]) for r in rows]


def _lock_id(key: IdentityKey) -> int:
    digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def awaiting(conn: Connection, key: IdentityKey) -> bool:
    """About to conclude that ``key`` is unresolved: on PostgreSQL, hold a shared lock on it
    until this transaction ends (module docstring) and return True: read it again now, and what
    is read from then on stands until commit. SQLite: nothing to do, False."""
    if not is_postgres(conn.engine):
        return False
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock_shared(%s)", (_lock_id(key),))
    return True


def _lock_for_release(conn: Connection, keys: Iterable[IdentityKey]) -> None:
    """About to release for ``keys``: on PostgreSQL, lock them exclusively until this
    transaction ends, in one order, so two changes never wait for each other in a cycle. (A
    worker holding shared locks on keys of two changes can close one with them; PostgreSQL
    detects it and fails one transaction with a transient error, which a worker retries.)"""
    if is_postgres(conn.engine):
        for lock in sorted({_lock_id(k) for k in keys}):
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (lock,))
