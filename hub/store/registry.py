"""The identity registry: Patients and Devices by business identifier, device assignments, and
the registry epoch.

Assignment periods are half-open, [start, end); ``end`` NULL means still assigned. Instants are
stored and compared in UTC: SQLite keeps DateTime columns as text without an offset, so a reading
at 07:30-05:00 compared with a start written at 12:00Z would otherwise compare wall-clock texts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.engine import Connection

from hub.contracts import Identifier
from hub.store.db import as_utc, utcnow
from hub.store.dialect import MARK, driver_cursor, insert_for
from hub.store.models import DeviceAssignment, RegistryEpoch, RegistryIdentifier

IDX = RegistryIdentifier.__table__  # type: ignore[attr-defined]
ASSIGN = DeviceAssignment.__table__  # type: ignore[attr-defined]
EPOCH = RegistryEpoch.__table__  # type: ignore[attr-defined]
_EPOCH_ROW = 1


def utc(when: datetime) -> datetime:
    """``when`` in UTC; a naive datetime is a programming error (its instant is unknown)."""
    if when.tzinfo is None:
        raise ValueError("a naive datetime has no instant; give it an offset")
    return when if when.tzinfo is UTC else when.astimezone(UTC)


# Lookups and binds as driver SQL on the transaction's cursor: built through SQLAlchemy Core
# (select(...).where(...) per call, its cache key and execution context) a lookup cost ~185 us
# of CPU and a bind ~165 us, for a primary-key probe (measured on SQLite, 2,000 identifiers,
# best of 5); a new device's first readings pay a few of them, and an HL7v2 message one per
# identifier it registers.
_LOOKUP = ("SELECT res_id FROM registry_identifier "
           "WHERE res_type = {m} AND system = {m} AND value = {m}")
_BIND = ("INSERT INTO registry_identifier (res_type, system, value, res_id) "
         "VALUES ({m}, {m}, {m}, {m}) ON CONFLICT DO NOTHING RETURNING res_id")
_SQL: dict[tuple[str, str], str] = {}


def _sql(conn: Connection, template: str) -> str:
    key = (conn.dialect.name, template)
    text = _SQL.get(key)
    if text is None:
        text = _SQL[key] = template.format(m=MARK[conn.dialect.name])
    return text


def lookup(conn: Connection, res_type: str, ident: Identifier) -> str | None:
    """The resource id registered for this identifier, if any."""
    with driver_cursor(conn, "registry lookup") as cursor:
        cursor.execute(_sql(conn, _LOOKUP), (res_type, ident.system, ident.value))
        row = cursor.fetchone()
    return None if row is None else str(row[0])


def bind(conn: Connection, res_type: str, ident: Identifier, res_id: str) -> tuple[str, bool]:
    """Bind identifier → id unless already bound: (the id bound now, whether this call bound it)."""
    # RETURNING says whether this insert happened (rowcount is -1 with psycopg here).
    with driver_cursor(conn, "registry bind") as cursor:
        cursor.execute(_sql(conn, _BIND), (res_type, ident.system, ident.value, res_id))
        inserted = cursor.fetchone()
    if inserted is not None:
        return res_id, True
    bound = lookup(conn, res_type, ident)
    return (bound if bound is not None else res_id), False


def register(conn: Connection, res_type: str, ident: Identifier, res_id: str) -> str:
    """Bind identifier → id unless already bound; returns the id that is bound now."""
    return bind(conn, res_type, ident, res_id)[0]


def identifiers_of(resource: dict[str, Any]) -> list[Identifier]:
    return [Identifier(i["system"], i["value"]) for i in resource.get("identifier") or []
            if i.get("system") and i.get("value")]


def identifiers_for(conn: Connection, res_type: str,
                    ids: Iterable[str]) -> dict[str, list[Identifier]]:
    """Every identifier bound to each of ``ids`` (sorted), for listings."""
    wanted = sorted(set(ids))
    found: dict[str, list[Identifier]] = {i: [] for i in wanted}
    if wanted:
        rows = conn.execute(select(IDX.c.res_id, IDX.c.system, IDX.c.value)
                            .where(IDX.c.res_type == res_type, IDX.c.res_id.in_(wanted))
                            .order_by(IDX.c.system, IDX.c.value)).all()
        for row in rows:
            found[row.res_id].append(Identifier(row.system, row.value))
    return found


# -- assignments ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Assignment:
    """A device assigned to a patient for [start, end) (``end`` None: still assigned)."""

    id: int
    device_id: str
    patient_id: str
    start: datetime
    end: datetime | None


def _assignment(row: Any) -> Assignment:
    start = as_utc(row.start)
    assert start is not None
    return Assignment(row.id, row.device_id, row.patient_id, start, as_utc(row.end))


def patient_at(conn: Connection, device_id: str, when: datetime) -> str | None:
    """The patient the device was assigned to at ``when`` (periods of a device never overlap)."""
    at = utc(when)
    return conn.execute(
        select(ASSIGN.c.patient_id)
        .where(ASSIGN.c.device_id == device_id, ASSIGN.c.start <= at,
               or_(ASSIGN.c.end.is_(None), ASSIGN.c.end > at))
        .order_by(ASSIGN.c.start.desc())
        .limit(1)
    ).scalar()


def lock_device(conn: Connection, device_id: str) -> None:
    """Serialize assignment changes of one device until the transaction ends (PostgreSQL: a row
    lock on its registry rows, so two concurrent assignments cannot both pass the overlap check;
    SQLite's write transaction already excludes every other writer)."""
    conn.execute(select(IDX.c.res_id)
                 .where(IDX.c.res_type == "Device", IDX.c.res_id == device_id)
                 .with_for_update()).all()


def overlapping(conn: Connection, device_id: str, start: datetime,
                end: datetime | None) -> list[Assignment]:
    """The device's assignments that share an instant with [start, end)."""
    query = select(ASSIGN).where(ASSIGN.c.device_id == device_id,
                                 or_(ASSIGN.c.end.is_(None), ASSIGN.c.end > utc(start)))
    if end is not None:
        query = query.where(ASSIGN.c.start < utc(end))
    return [_assignment(r) for r in conn.execute(query.order_by(ASSIGN.c.start)).all()]


def covering(conn: Connection, device_id: str, at: datetime) -> Assignment | None:
    """The device's assignment in force at ``at``, if any."""
    row = conn.execute(
        select(ASSIGN).where(ASSIGN.c.device_id == device_id, ASSIGN.c.start <= utc(at),
                             or_(ASSIGN.c.end.is_(None), ASSIGN.c.end > utc(at)))
        .order_by(ASSIGN.c.start.desc()).limit(1)).first()
    return None if row is None else _assignment(row)


def add_assignment(conn: Connection, device_id: str, patient_id: str, start: datetime,
                   end: datetime | None) -> Assignment:
    """Record [start, end) as given; the caller checked that it overlaps nothing."""
    start, end = utc(start), None if end is None else utc(end)
    new_id = conn.execute(ASSIGN.insert().returning(ASSIGN.c.id), {
        "device_id": device_id, "patient_id": patient_id, "start": start, "end": end,
        "created_at": utcnow(),
    }).scalar_one()
    return Assignment(int(new_id), device_id, patient_id, start, end)


def end_assignment(conn: Connection, assignment_id: int, at: datetime) -> None:
    conn.execute(update(ASSIGN).where(ASSIGN.c.id == assignment_id).values(end=utc(at)))


def delete_assignment(conn: Connection, assignment_id: int) -> None:
    conn.execute(delete(ASSIGN).where(ASSIGN.c.id == assignment_id))


def assignments(conn: Connection, *, device_id: str | None = None,
                patient_id: str | None = None, at: datetime | None = None) -> list[Assignment]:
    """Assignments, by device then start, filtered by device, patient and instant in force."""
    query = select(ASSIGN)
    if device_id is not None:
        query = query.where(ASSIGN.c.device_id == device_id)
    if patient_id is not None:
        query = query.where(ASSIGN.c.patient_id == patient_id)
    if at is not None:
        query = query.where(and_(ASSIGN.c.start <= utc(at),
                                 or_(ASSIGN.c.end.is_(None), ASSIGN.c.end > utc(at))))
    rows = conn.execute(query.order_by(ASSIGN.c.device_id, ASSIGN.c.start)).all()
    return [_assignment(r) for r in rows]


# -- the registry epoch --------------------------------------------------------------------------

def epoch(conn: Connection, *, share: bool = False) -> int:
    """The registry epoch. ``share`` (PostgreSQL) holds a share lock on it until the transaction
    ends, so ``bump_epoch`` in another transaction waits for this one: bindings this transaction
    read from a cache can never be used after a merge that moved them has committed."""
    # Driver SQL, as lookups: a worker reads the epoch twice a batch (prepare, commit), and the
    # Core select cost 89 us a read, this 19 us (SQLite, timeit, best of 5); with the split
    # topology's small batches that was ~20 us a message.
    statement = (_EPOCH_SHARE if share and conn.dialect.name == "postgresql"
                 else _EPOCH)  # SQLite: no clause (one writer at a time)
    found = _epoch_read(conn, statement)
    if found is None and share:  # the migration creates the row; a truncated table lacks it,
        _create_epoch_row(conn)  # and a missing row cannot be locked
        found = _epoch_read(conn, statement)
    return 0 if found is None else int(found)


_EPOCH = f"SELECT epoch FROM registry_epoch WHERE id = {_EPOCH_ROW}"
_EPOCH_SHARE = _EPOCH + " FOR SHARE"


def _epoch_read(conn: Connection, statement: str) -> Any:
    with driver_cursor(conn, "registry epoch") as cursor:
        cursor.execute(statement)
        row = cursor.fetchone()
    return None if row is None else row[0]


def _create_epoch_row(conn: Connection) -> None:
    conn.execute(insert_for(conn, EPOCH).on_conflict_do_nothing(), {"id": _EPOCH_ROW, "epoch": 0})


def bump_epoch(conn: Connection) -> int:
    """Advance the epoch in the caller's transaction (every cached binding is stale once it
    commits); returns the new value."""
    bumped = conn.execute(update(EPOCH).where(EPOCH.c.id == _EPOCH_ROW)
                          .values(epoch=EPOCH.c.epoch + 1).returning(EPOCH.c.epoch)).scalar()
    if bumped is None:
        _create_epoch_row(conn)
        return bump_epoch(conn)
    return int(bumped)
