"""The rules' tables: rolling state, per-patient overrides, and the schedule of due evaluations.

Per evaluated message: one SELECT (states and overrides of the message's patients) and at most
one upsert of changed states plus one of changed schedule rows. On PostgreSQL the states are
read ``FOR UPDATE`` (ordered, so two workers lock in the same order), so two workers handling
one patient's messages serialise instead of losing an update; SQLite has one writer anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from hub.store.db import utcnow
from hub.store.dialect import insert_for
from hub.store.models import RuleOverride, RuleSchedule, RuleState

STATE = RuleState.__table__  # type: ignore[attr-defined]
OVERRIDE = RuleOverride.__table__  # type: ignore[attr-defined]
SCHEDULE = RuleSchedule.__table__  # type: ignore[attr-defined]
Key = tuple[str, str]


# The per-message statements are plain SQL on the transaction's own DBAPI cursor: building,
# compiling and dispatching Core statements cost more than running them on a one-reading
# message (bench/rules.py). Both dialects speak this SQL; only the parameter marker differs.
_LOAD_SQLITE = ("SELECT patient_id, rule_id, state, 's' FROM rule_state WHERE patient_id IN ({q})"
                " UNION ALL "
                "SELECT patient_id, rule_id, params, 'o' FROM rule_override "
                "WHERE patient_id IN ({q})")
_LOAD_PG_STATES = ("SELECT patient_id, rule_id, state FROM rule_state WHERE patient_id = ANY(%s)"
                   " ORDER BY patient_id, rule_id FOR UPDATE")
_LOAD_PG_OVERRIDES = ("SELECT patient_id, rule_id, params FROM rule_override "
                      "WHERE patient_id = ANY(%s)")
_SAVE = ("INSERT INTO rule_state (patient_id, rule_id, state, updated_at) VALUES ({m}, {m}, {m}, "
         "{m}) ON CONFLICT (patient_id, rule_id) DO UPDATE SET state = excluded.state, "
         "updated_at = excluded.updated_at")


@contextmanager
def _cursor(conn: Connection, what: str) -> Iterator[Any]:
    """The transaction's DBAPI cursor. A driver error comes out as SQLAlchemy's own class
    (OperationalError for a deadlock victim or a lost connection), as from any other statement,
    and without parameters in its text (they hold patient ids)."""
    cursor = conn.connection.cursor()
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield cursor
    except dbapi_error as exc:
        raise DBAPIError.instance(what, None, exc, dbapi_error,
                                  hide_parameters=True) from exc
    finally:
        cursor.close()


def load(conn: Connection, patients: list[str]
         ) -> tuple[dict[Key, str], dict[Key, str]]:
    """(state JSON by (patient, rule), override params JSON by (patient, rule))."""
    states: dict[Key, str] = {}
    overrides: dict[Key, str] = {}
    if not patients:
        return states, overrides
    with _cursor(conn, "rule_state load") as cursor:
        if conn.dialect.name == "postgresql":
            cursor.execute(_LOAD_PG_STATES, (patients,))
            states = {(r[0], r[1]): r[2] for r in cursor.fetchall()}
            cursor.execute(_LOAD_PG_OVERRIDES, (patients,))
            overrides = {(r[0], r[1]): r[2] for r in cursor.fetchall()}
            return states, overrides
        cursor.execute(_LOAD_SQLITE.format(q=", ".join("?" * len(patients))),
                       (*patients, *patients))
        for patient, rule, text, which in cursor.fetchall():
            (states if which == "s" else overrides)[(patient, rule)] = text
        return states, overrides


def save(conn: Connection, rows: list[tuple[str, str, str]]) -> None:
    """Upsert (patient, rule, state JSON) rows."""
    if not rows:
        return
    now = utcnow()
    with _cursor(conn, "rule_state save") as cursor:
        if conn.dialect.name == "postgresql":
            cursor.executemany(_SAVE.format(m="%s"), [(p, r, s, now) for p, r, s in rows])
        else:
            stamp = now.isoformat(" ", "microseconds")[:26]  # no offset: UTC, as SQLAlchemy
            cursor.executemany(_SAVE.format(m="?"), [(p, r, s, stamp) for p, r, s in rows])


_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert(conn: Connection, table: Any, keys: list[str], updated: list[str]) -> Any:
    """An ``INSERT ... ON CONFLICT DO UPDATE`` built once per dialect and table: building
    ``excluded`` costs milliseconds."""
    key = (conn.dialect.name, table.name)
    stmt = _UPSERTS.get(key)
    if stmt is None:
        base = insert_for(conn, table)
        stmt = _UPSERTS[key] = base.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={name: base.excluded[name] for name in updated})
    return stmt


def schedule(conn: Connection, rows: Iterable[tuple[str, str, float | None]]) -> None:
    """Set (epoch seconds) or clear (None) the next due time of (patient, rule)."""
    sets = [{"patient_id": p, "rule_id": r, "due_at": datetime.fromtimestamp(due, UTC)}
            for p, r, due in rows if due is not None]
    clears = [(p, r) for p, r, due in rows if due is None]
    if sets:
        conn.execute(_upsert(conn, SCHEDULE, ["patient_id", "rule_id"], ["due_at"]), sets)
    for patient, rule in clears:
        conn.execute(delete(SCHEDULE).where(SCHEDULE.c.patient_id == patient,
                                            SCHEDULE.c.rule_id == rule))


def due(conn: Connection, now: datetime, limit: int) -> list[Key]:
    """(patient, rule) pairs due at ``now``, earliest first; PostgreSQL skips rows another
    scheduler holds."""
    stmt = (select(SCHEDULE.c.patient_id, SCHEDULE.c.rule_id)
            .where(SCHEDULE.c.due_at <= now).order_by(SCHEDULE.c.due_at).limit(limit))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [(r[0], r[1]) for r in conn.execute(stmt)]


def next_due(conn: Connection, patient: str) -> dict[str, datetime]:
    rows = conn.execute(select(SCHEDULE.c.rule_id, SCHEDULE.c.due_at)
                        .where(SCHEDULE.c.patient_id == patient))
    return {r[0]: r[1].replace(tzinfo=UTC) if r[1].tzinfo is None else r[1] for r in rows}


# ---------------------------------------------------------------- overrides (API)

def overrides_of(conn: Connection, patient: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(OVERRIDE.c.rule_id, OVERRIDE.c.params)
                        .where(OVERRIDE.c.patient_id == patient).order_by(OVERRIDE.c.rule_id))
    return {r[0]: orjson.loads(r[1]) for r in rows}


def put_override(conn: Connection, patient: str, rule: str, params: dict[str, Any],
                 by: str | None) -> None:
    text = orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()
    conn.execute(_upsert(conn, OVERRIDE, ["patient_id", "rule_id"],
                         ["params", "updated_at", "updated_by"]),
                 [{"patient_id": patient, "rule_id": rule, "params": text, "updated_at": utcnow(),
          "updated_by": by}])


def delete_override(conn: Connection, patient: str, rule: str) -> bool:
    result = conn.execute(delete(OVERRIDE).where(OVERRIDE.c.patient_id == patient,
                                                 OVERRIDE.c.rule_id == rule))
    return bool(result.rowcount)


def states_of(conn: Connection, patient: str) -> dict[str, str]:
    rows = conn.execute(select(STATE.c.rule_id, STATE.c.state)
                        .where(STATE.c.patient_id == patient))
    return {r[0]: r[1] for r in rows}
