"""The identity registry: Patients and Devices by business identifier, and device assignments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from hub.contracts import Identifier
from hub.store.db import utcnow
from hub.store.dialect import insert_for
from hub.store.models import DeviceAssignment, RegistryIdentifier

IDX = RegistryIdentifier.__table__  # type: ignore[attr-defined]
ASSIGN = DeviceAssignment.__table__  # type: ignore[attr-defined]


def lookup(conn: Connection, res_type: str, ident: Identifier) -> str | None:
    """The resource id registered for this identifier, if any."""
    return conn.execute(
        select(IDX.c.res_id).where(IDX.c.res_type == res_type, IDX.c.system == ident.system,
                                   IDX.c.value == ident.value)
    ).scalar()


def register(conn: Connection, res_type: str, ident: Identifier, res_id: str) -> str:
    """Bind identifier → id unless already bound; returns the id that is bound now."""
    conn.execute(
        insert_for(conn, IDX).on_conflict_do_nothing(),
        {"res_type": res_type, "system": ident.system, "value": ident.value, "res_id": res_id},
    )
    bound = lookup(conn, res_type, ident)
    return bound if bound is not None else res_id


def identifiers_of(resource: dict[str, Any]) -> list[Identifier]:
    return [Identifier(i["system"], i["value"]) for i in resource.get("identifier") or []
            if i.get("system") and i.get("value")]


def patient_at(conn: Connection, device_id: str, when: datetime) -> str | None:
    """The patient the device was assigned to at ``when`` (latest-starting assignment wins)."""
    return conn.execute(
        select(ASSIGN.c.patient_id)
        .where(ASSIGN.c.device_id == device_id, ASSIGN.c.start <= when,
               or_(ASSIGN.c.end.is_(None), ASSIGN.c.end > when))
        .order_by(ASSIGN.c.start.desc())
        .limit(1)
    ).scalar()


def assign(
    conn: Connection, device_id: str, patient_id: str, start: datetime, end: datetime | None
) -> int:
    """Record an assignment for [start, end); an open assignment of the device that is still
    running at ``start`` is ended there, so periods never overlap."""
    conn.execute(
        ASSIGN.update()
        .where(and_(ASSIGN.c.device_id == device_id, ASSIGN.c.end.is_(None),
                    ASSIGN.c.start < start))
        .values(end=start)
    )
    result = conn.execute(ASSIGN.insert().returning(ASSIGN.c.id), {
        "device_id": device_id, "patient_id": patient_id, "start": start, "end": end,
        "created_at": utcnow(),
    })
    return int(result.scalar_one())


def assignments(conn: Connection, device_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(ASSIGN).where(ASSIGN.c.device_id == device_id)
                        .order_by(ASSIGN.c.start)).all()
    return [dict(r._mapping) for r in rows]
