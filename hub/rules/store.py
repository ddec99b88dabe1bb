"""The rules' tables: rolling state, per-patient overrides and settings, the schedule.

- ``rule_patient_state``: one row per patient holding every rule's state, one line
  ``<rule id>\\t<state JSON>`` per rule (``pack``/``unpack``; rule ids never contain a tab or a
  newline, and compact JSON never contains a raw newline). Per evaluation (the messages of one
  worker transaction): one SELECT (the patients' state rows and overrides together) and at
  most one upsert per patient, however many rules and messages moved it; only the rules a
  message touches are decoded.
- ``rule_override``: a patient's override of one rule (a merge patch, hub/rules/overrides.py);
  rule id ``*`` holds the patient's own settings (time zone).
- ``rule_schedule``: the next due time of each (patient, time-based rule), indexed.

**Concurrency (PostgreSQL).** State rows are read ``FOR UPDATE`` in patient order, so two
workers handling one patient serialise instead of losing an update. A patient with no row yet
has nothing to lock: the first reader inserts an empty row (``ON CONFLICT DO NOTHING``, which
waits for another transaction inserting the same patient to finish) and re-reads it ``FOR
UPDATE`` — so the second of two workers seeing a brand-new patient at once reads the first
one's committed state instead of overwriting it (tests/rules/test_concurrency.py). SQLite has
one writer (``BEGIN IMMEDIATE``), so it needs neither.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from hub.store.dialect import driver_cursor, driver_error, insert_for, sqlite_time
from hub.store.models import RuleOverride, RulePatientState, RuleSchedule

STATE = RulePatientState.__table__  # type: ignore[attr-defined]
OVERRIDE = RuleOverride.__table__  # type: ignore[attr-defined]
SCHEDULE = RuleSchedule.__table__  # type: ignore[attr-defined]
SETTINGS = "*"  # the rule_override "rule" holding a patient's own settings
Key = tuple[str, str]


def unpack(text: str | None) -> dict[str, str]:
    """A state row → {rule id: state JSON}."""
    if not text:
        return {}
    return dict(line.split("\t", 1) for line in text.split("\n"))


def pack(states: dict[str, str]) -> str:
    """{rule id: state JSON} → a state row."""
    # joined in C (an f-string per rule was ~1/3 of packing a patient's ~15 rules)
    return "\n".join(map("\t".join, states.items()))


@dataclass(slots=True)
class Loaded:
    """What one evaluation reads: the state row's text per patient (``texts``; "" for a
    claimed empty row), its states unpacked (``states``, unless ``load(unpacked=False)``) and
    overrides per (patient, rule)."""

    states: dict[str, dict[str, str]] = field(default_factory=dict)
    overrides: dict[Key, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


# The per-message statements are plain SQL on the transaction's own DBAPI cursor: building,
# compiling and dispatching Core statements cost more than running them on a one-reading
# message (bench/rules.py). Both dialects speak this SQL; only the parameter marker differs.
_LOAD_SQLITE = ("SELECT patient_id, NULL, states FROM rule_patient_state WHERE patient_id IN ({q})"
                " UNION ALL "
                "SELECT patient_id, rule_id, params FROM rule_override WHERE patient_id IN ({q})")
_LOAD_PG = ("WITH s AS (SELECT patient_id, states FROM rule_patient_state "
            "WHERE patient_id = ANY(%s) ORDER BY patient_id FOR UPDATE) "
            "SELECT patient_id, NULL, states FROM s UNION ALL "
            "SELECT patient_id, rule_id, params FROM rule_override WHERE patient_id = ANY(%s)")
_CLAIM_PG = ("INSERT INTO rule_patient_state (patient_id, states, updated_at) "
             "SELECT p, '', %s FROM unnest(%s::text[]) AS p ORDER BY p "
             "ON CONFLICT (patient_id) DO NOTHING")
_RELOAD_PG = ("SELECT patient_id, states FROM rule_patient_state WHERE patient_id = ANY(%s) "
              "ORDER BY patient_id FOR UPDATE")
_SAVE = ("INSERT INTO rule_patient_state (patient_id, states, updated_at) VALUES ({m}, {m}, {m})"
         " ON CONFLICT (patient_id) DO UPDATE SET states = excluded.states, "
         "updated_at = excluded.updated_at")
_SAVE_SQLITE = _SAVE.format(m="?")
_SCHEDULE = ("INSERT INTO rule_schedule (patient_id, rule_id, due_at) VALUES ({m}, {m}, {m}) "
             "ON CONFLICT (patient_id, rule_id) DO UPDATE SET due_at = excluded.due_at")
_UNSCHEDULE = "DELETE FROM rule_schedule WHERE patient_id = {m} AND rule_id = {m}"


_stamp: list[Any] = [-1, ""]


def _sqlite_stamp() -> str:
    """Now (to the second) as SQLAlchemy writes a UTC DateTime on SQLite (no offset), formatted
    once a second: ``isoformat`` per save cost ~4 % of the rules stage (py-spy,
    bench/rules.py)."""
    second = int(time.time())
    if second != _stamp[0]:
        _stamp[:] = [second, sqlite_time(datetime.fromtimestamp(second, UTC))]
    text: str = _stamp[1]
    return text


def load(conn: Connection, patients: list[str], *, unpacked: bool = True) -> Loaded:
    """The patients' rule states and overrides (on PostgreSQL, their state rows locked);
    ``unpacked=False`` leaves ``states`` empty (the caller unpacks ``texts`` as it needs)."""
    loaded = Loaded()
    if not patients:
        return loaded
    if conn.dialect.name == "postgresql":
        _load_pg(conn, patients, loaded)
    else:
        _load_sqlite(conn, patients, loaded)
    if unpacked:
        loaded.states = {patient: unpack(text) for patient, text in loaded.texts.items()}
    return loaded


def _load_sqlite(conn: Connection, patients: list[str], loaded: Loaded) -> None:
    texts, overrides = loaded.texts, loaded.overrides
    # sqlite3's own Connection.execute: the pool's cursor proxy and a context manager around
    # it cost as much as the query (py-spy on bench/rules.py --batch 1)
    try:
        rows = conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
            _LOAD_SQLITE.format(q=", ".join("?" * len(patients))),
            (*patients, *patients)).fetchall()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, "rule state load", exc) from exc
    for patient, rule, text in rows:
        if rule is None:
            texts[patient] = text or ""
        else:
            overrides[(patient, rule)] = text


def _load_pg(conn: Connection, patients: list[str], loaded: Loaded) -> None:
    texts, overrides = loaded.texts, loaded.overrides
    with driver_cursor(conn, "rule state load") as cursor:
        cursor.execute(_LOAD_PG, (patients, patients))
        for patient, rule, text in cursor.fetchall():
            if rule is None:
                texts[patient] = text or ""
            else:
                overrides[(patient, rule)] = text
        missing = sorted(p for p in set(patients) if p not in texts)
        if missing:
            cursor.execute(_CLAIM_PG, (datetime.now(UTC), missing))
            cursor.execute(_RELOAD_PG, (missing,))
            for patient, text in cursor.fetchall():
                texts[patient] = text or ""


def save(conn: Connection, rows: list[tuple[str, str]]) -> None:
    """Upsert (patient, packed states) rows."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        with driver_cursor(conn, "rule state save") as cursor:
            now = datetime.now(UTC)
            cursor.executemany(_SAVE.format(m="%s"), [(p, s, now) for p, s in rows])
        return
    stamp = _sqlite_stamp()
    try:
        conn.connection.dbapi_connection.executemany(  # type: ignore[union-attr]
            _SAVE_SQLITE, [(p, s, stamp) for p, s in rows])
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, "rule state save", exc) from exc


def schedule(conn: Connection, rows: Iterable[tuple[str, str, float | None]]) -> None:
    """Set (epoch seconds) or clear (None) the next due time of (patient, rule)."""
    rows = list(rows)
    if not rows:
        return
    pg = conn.dialect.name == "postgresql"
    mark = "%s" if pg else "?"
    sets = [(p, r, datetime.fromtimestamp(due, UTC) if pg
             else sqlite_time(datetime.fromtimestamp(due, UTC)))
            for p, r, due in rows if due is not None]
    clears = [(p, r) for p, r, due in rows if due is None]
    with driver_cursor(conn, "rule schedule") as cursor:
        if sets:
            cursor.executemany(_SCHEDULE.format(m=mark), sets)
        if clears:
            cursor.executemany(_UNSCHEDULE.format(m=mark), clears)


def due(conn: Connection, now: datetime, limit: int) -> list[Key]:
    """(patient, rule) pairs due at ``now``, earliest first; PostgreSQL skips rows another
    scheduler holds."""
    stmt = (select(SCHEDULE.c.patient_id, SCHEDULE.c.rule_id)
            .where(SCHEDULE.c.due_at <= now.astimezone(UTC)).order_by(SCHEDULE.c.due_at)
            .limit(limit))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [(r[0], r[1]) for r in conn.execute(stmt)]


def next_due(conn: Connection, patient: str) -> dict[str, datetime]:
    rows = conn.execute(select(SCHEDULE.c.rule_id, SCHEDULE.c.due_at)
                        .where(SCHEDULE.c.patient_id == patient))
    return {r[0]: r[1].replace(tzinfo=UTC) if r[1].tzinfo is None else r[1] for r in rows}


# ---------------------------------------------------------------- overrides (API)

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


def overrides_of(conn: Connection, patient: str) -> dict[str, dict[str, Any]]:
    """The patient's rule overrides by rule id (settings excluded: ``settings_of``)."""
    rows = conn.execute(select(OVERRIDE.c.rule_id, OVERRIDE.c.params)
                        .where(OVERRIDE.c.patient_id == patient, OVERRIDE.c.rule_id != SETTINGS)
                        .order_by(OVERRIDE.c.rule_id))
    return {r[0]: orjson.loads(r[1]) for r in rows}


def settings_of(conn: Connection, patient: str) -> dict[str, Any]:
    """The patient's own settings (``{"timezone": ...}``), empty when none are set."""
    text = conn.execute(select(OVERRIDE.c.params).where(
        OVERRIDE.c.patient_id == patient, OVERRIDE.c.rule_id == SETTINGS)).scalar_one_or_none()
    found: dict[str, Any] = orjson.loads(text) if text else {}
    return found


def put_override(conn: Connection, patient: str, rule: str, params: dict[str, Any],
                 by: str | None) -> None:
    """Store a patient's override of ``rule`` (or, with rule ``*``, the patient's settings)."""
    text = orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()
    conn.execute(_upsert(conn, OVERRIDE, ["patient_id", "rule_id"],
                         ["params", "updated_at", "updated_by"]),
                 [{"patient_id": patient, "rule_id": rule, "params": text,
                   "updated_at": datetime.now(UTC), "updated_by": by}])


def delete_override(conn: Connection, patient: str, rule: str) -> bool:
    result = conn.execute(delete(OVERRIDE).where(OVERRIDE.c.patient_id == patient,
                                                 OVERRIDE.c.rule_id == rule))
    return bool(result.rowcount)


def states_of(conn: Connection, patient: str) -> dict[str, str]:
    """{rule id: state JSON} of one patient (explain; no lock)."""
    text = conn.execute(select(STATE.c.states).where(STATE.c.patient_id == patient)
                        ).scalar_one_or_none()
    return unpack(text)
