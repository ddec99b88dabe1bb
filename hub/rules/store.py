"""The rules' tables: rolling state, per-patient overrides, and the schedule of due evaluations.

Per evaluated message: one SELECT (states and overrides of the message's patients) and at most
one upsert of changed states plus one of changed schedule rows. On PostgreSQL the states are
read ``FOR UPDATE`` (ordered, so two workers lock in the same order), so two workers handling
one patient's messages serialise instead of losing an update; SQLite has one writer anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, literal, select, union_all
from sqlalchemy.engine import Connection

from hub.store.db import utcnow
from hub.store.dialect import insert_for
from hub.store.models import RuleOverride, RuleSchedule, RuleState

STATE = RuleState.__table__  # type: ignore[attr-defined]
OVERRIDE = RuleOverride.__table__  # type: ignore[attr-defined]
SCHEDULE = RuleSchedule.__table__  # type: ignore[attr-defined]
Key = tuple[str, str]


def load(conn: Connection, patients: list[str]
         ) -> tuple[dict[Key, str], dict[Key, str]]:
    """(state JSON by (patient, rule), override params JSON by (patient, rule))."""
    states: dict[Key, str] = {}
    overrides: dict[Key, str] = {}
    if not patients:
        return states, overrides
    if conn.dialect.name == "postgresql":
        rows = conn.execute(select(STATE.c.patient_id, STATE.c.rule_id, STATE.c.state)
                            .where(STATE.c.patient_id.in_(patients))
                            .order_by(STATE.c.patient_id, STATE.c.rule_id)
                            .with_for_update()).all()
        states = {(r[0], r[1]): r[2] for r in rows}
        overrides = {(r[0], r[1]): r[2] for r in conn.execute(
            select(OVERRIDE.c.patient_id, OVERRIDE.c.rule_id, OVERRIDE.c.params)
            .where(OVERRIDE.c.patient_id.in_(patients)))}
        return states, overrides
    both = union_all(
        select(STATE.c.patient_id, STATE.c.rule_id, STATE.c.state, literal("s"))
        .where(STATE.c.patient_id.in_(patients)),
        select(OVERRIDE.c.patient_id, OVERRIDE.c.rule_id, OVERRIDE.c.params, literal("o"))
        .where(OVERRIDE.c.patient_id.in_(patients)))
    for patient, rule, text, which in conn.execute(both):
        (states if which == "s" else overrides)[(patient, rule)] = text
    return states, overrides


def save(conn: Connection, rows: list[tuple[str, str, str]]) -> None:
    """Upsert (patient, rule, state JSON) rows."""
    if not rows:
        return
    now = utcnow()
    stmt = insert_for(conn, STATE)
    stmt = stmt.on_conflict_do_update(
        index_elements=[STATE.c.patient_id, STATE.c.rule_id],
        set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at})
    conn.execute(stmt, [{"patient_id": p, "rule_id": r, "state": s, "updated_at": now}
                        for p, r, s in rows])


def schedule(conn: Connection, rows: Iterable[tuple[str, str, float | None]]) -> None:
    """Set (epoch seconds) or clear (None) the next due time of (patient, rule)."""
    sets = [{"patient_id": p, "rule_id": r, "due_at": datetime.fromtimestamp(due, UTC)}
            for p, r, due in rows if due is not None]
    clears = [(p, r) for p, r, due in rows if due is None]
    if sets:
        stmt = insert_for(conn, SCHEDULE)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[SCHEDULE.c.patient_id, SCHEDULE.c.rule_id],
            set_={"due_at": stmt.excluded.due_at}), sets)
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
    stmt = insert_for(conn, OVERRIDE)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[OVERRIDE.c.patient_id, OVERRIDE.c.rule_id],
        set_={"params": stmt.excluded.params, "updated_at": stmt.excluded.updated_at,
              "updated_by": stmt.excluded.updated_by}),
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
