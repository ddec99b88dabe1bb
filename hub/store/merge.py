"""Patient merge (HL7 ADT^A40): everything recorded for the merged patient moves to the survivor.

In one transaction (the caller's): the merged patient's registry identifiers are re-bound to the
survivor (so later messages naming them land on the survivor), its device assignments are
re-pointed, every resource whose subject is the merged Patient gets the survivor as subject (a
new version, delivered again by sync), the merged Patient is marked ``active: false`` with a
``replaced-by`` link, and the survivor gains a ``replaces`` link. Resource ids do not change:
an Observation keeps the id it was first stored under.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from hub.contracts import Identifier
from hub.store import registry, resources
from hub.store.models import DeviceAssignment, RegistryIdentifier, Resource
from hub.store.resources import Written

R = Resource.__table__  # type: ignore[attr-defined]
IDX = RegistryIdentifier.__table__  # type: ignore[attr-defined]
ASSIGN = DeviceAssignment.__table__  # type: ignore[attr-defined]


def bind_to(conn: Connection, res_type: str, ident: Identifier, res_id: str) -> None:
    """Bind ``ident`` to ``res_id``, moving it if it was bound to another resource."""
    if registry.register(conn, res_type, ident, res_id) != res_id:
        conn.execute(update(IDX).where(IDX.c.res_type == res_type, IDX.c.system == ident.system,
                                       IDX.c.value == ident.value).values(res_id=res_id))


def merge_patients(conn: Connection, survivor_id: str, merged_ids: set[str],
                   identifiers: tuple[Identifier, ...], message_id: str | None) -> list[Written]:
    """Move ``merged_ids`` (patients found by the merged identifiers) into ``survivor_id``."""
    for ident in identifiers:
        bind_to(conn, "Patient", ident, survivor_id)
    changed: list[dict[str, Any]] = []
    links: list[str] = []
    for merged_id in sorted(merged_ids - {survivor_id}):
        conn.execute(update(IDX).where(IDX.c.res_type == "Patient", IDX.c.res_id == merged_id)
                     .values(res_id=survivor_id))
        conn.execute(update(ASSIGN).where(ASSIGN.c.patient_id == merged_id)
                     .values(patient_id=survivor_id))
        old, new = f'"Patient/{merged_id}"', f'"Patient/{survivor_id}"'
        rows = conn.execute(select(R.c.content).where(R.c.subject == f"Patient/{merged_id}",
                                                      R.c.res_type != "Patient")).all()
        changed.extend(orjson.loads(row.content.replace(old, new)) for row in rows)
        merged = resources.read(conn, "Patient", merged_id)
        if merged is not None:
            merged["active"] = False
            merged["link"] = [{"other": {"reference": f"Patient/{survivor_id}"},
                               "type": "replaced-by"}]
            changed.append(merged)
        links.append(merged_id)
    if links:
        survivor = resources.read(conn, "Patient", survivor_id) or {
            "resourceType": "Patient", "id": survivor_id}
        have = {(lk.get("other") or {}).get("reference") for lk in survivor.get("link", [])}
        survivor["link"] = survivor.get("link", []) + [
            {"other": {"reference": f"Patient/{m}"}, "type": "replaces"}
            for m in links if f"Patient/{m}" not in have]
        changed.append(survivor)
    return resources.upsert(conn, changed, message_id) if changed else []
