"""FHIR resources: idempotent upserts with search columns, and reads.

A resource is written by id. Writing the same content again changes nothing (no new version, no
new delivery): the content hash ignores ``meta``, so the same reading arriving through a webhook
and a backfill is one resource with the lineage of the first arrival.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, select, tuple_
from sqlalchemy.engine import Connection

from hub.store.db import as_utc, utcnow
from hub.store.dialect import insert_for
from hub.store.models import Resource, ResourceToken

R = Resource.__table__  # type: ignore[attr-defined]
TOK = ResourceToken.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Written:
    """A resource version that changed in this transaction (what sync must deliver)."""

    res_type: str
    res_id: str
    version_id: int
    subject: str | None


def content_hash(resource: dict[str, Any]) -> str:
    body = {k: v for k, v in resource.items() if k != "meta"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value if len(value) > 10 else value + "T00:00:00+00:00")
    except ValueError:
        return None
    return as_utc(parsed)


def _first_coding(concept: Any) -> tuple[str | None, str | None]:
    if isinstance(concept, dict):
        for coding in concept.get("coding") or []:
            return coding.get("system"), coding.get("code")
    return None, None


def search_columns(resource: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns of a resource: subject, primary code, category, status, effective."""
    rtype = resource["resourceType"]
    subject = resource.get("subject") or resource.get("patient")
    if rtype == "Patient":
        subject_ref: str | None = f"Patient/{resource['id']}"
    else:
        subject_ref = subject.get("reference") if isinstance(subject, dict) else None
    system, code = _first_coding(resource.get("code"))
    categories = resource.get("category")
    category = None
    if isinstance(categories, list) and categories:
        category = _first_coding(categories[0])[1]
    elif isinstance(categories, dict):
        category = _first_coding(categories)[1]
    effective = (
        resource.get("effectiveDateTime")
        or resource.get("effectiveInstant")
        or (resource.get("effectivePeriod") or {}).get("start")
        or (resource.get("period") or {}).get("start")
        or resource.get("sent")
    )
    return {
        "subject": subject_ref, "code_system": system, "code": code, "category": category,
        "status": resource.get("status"), "effective": _parse_instant(effective),
    }


def _extra_tokens(resource: dict[str, Any]) -> list[dict[str, Any]]:
    codings = (resource.get("code") or {}).get("coding") or []
    return [
        {"res_type": resource["resourceType"], "res_id": resource["id"], "param": "code",
         "system": c.get("system") or "", "code": c["code"]}
        for c in codings[1:] if c.get("code")
    ]


def upsert(
    conn: Connection, resources: list[dict[str, Any]], message_id: str | None
) -> list[Written]:
    """Insert or update resources by (type, id); returns only those whose content changed."""
    if not resources:
        return []
    now = utcnow()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    tokens: list[dict[str, Any]] = []
    for res in resources:  # last write of an id within one batch wins (an upsert may hit once)
        meta = res.get("meta")
        if meta:
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
        row = search_columns(res)
        row.update(res_type=res["resourceType"], res_id=res["id"], version_id=1,
                   content_hash=content_hash(res), last_updated=now, message_id=message_id,
                   content=orjson.dumps(res).decode())
        rows[(res["resourceType"], res["id"])] = row
        tokens.extend(_extra_tokens(res))
    stmt = insert_for(conn, R)
    stmt = stmt.on_conflict_do_update(
        index_elements=[R.c.res_type, R.c.res_id],
        set_={
            "version_id": R.c.version_id + 1, "content_hash": stmt.excluded.content_hash,
            "subject": stmt.excluded.subject, "code_system": stmt.excluded.code_system,
            "code": stmt.excluded.code, "category": stmt.excluded.category,
            "status": stmt.excluded.status, "effective": stmt.excluded.effective,
            "last_updated": stmt.excluded.last_updated, "content": stmt.excluded.content,
            "message_id": stmt.excluded.message_id,
        },
        where=R.c.content_hash != stmt.excluded.content_hash,
    ).returning(R.c.res_type, R.c.res_id, R.c.version_id, R.c.subject)
    written = [Written(r.res_type, r.res_id, r.version_id, r.subject)
               for r in conn.execute(stmt, list(rows.values()))]
    if tokens:
        conn.execute(insert_for(conn, TOK).on_conflict_do_nothing(), tokens)
    return written


def with_meta(content: str, version_id: int, last_updated: datetime) -> dict[str, Any]:
    """The stored JSON with ``meta.versionId`` and ``meta.lastUpdated`` filled in."""
    resource: dict[str, Any] = orjson.loads(content)
    meta = resource.setdefault("meta", {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = (as_utc(last_updated) or utcnow()).isoformat()
    return resource


def read(conn: Connection, res_type: str, res_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(R.c.content, R.c.version_id, R.c.last_updated)
        .where(R.c.res_type == res_type, R.c.res_id == res_id)
    ).first()
    return None if row is None else with_meta(row.content, row.version_id, row.last_updated)


def read_many(conn: Connection, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Resources by (type, id), in no particular order; missing keys are skipped."""
    if not keys:
        return []
    rows = conn.execute(
        select(R.c.content, R.c.version_id, R.c.last_updated)
        .where(and_(tuple_(R.c.res_type, R.c.res_id).in_(keys)))
    ).all()
    return [with_meta(r.content, r.version_id, r.last_updated) for r in rows]
