"""FHIR resources: idempotent upserts with search columns, and reads.

A resource is written by id. Writing the same content again changes nothing (no new version, no
new delivery): the content hash ignores ``meta``, so the same reading arriving through a webhook
and a backfill is one resource with the lineage of the first arrival.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, select, tuple_
from sqlalchemy.engine import Connection, Dialect

from hub.store.db import as_utc, utcnow
from hub.store.dialect import sqlite_time, time_writer
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
    # A copy less its meta: dict() + pop is a C-level copy (0.13-0.16 us for an Observation)
    # where a comprehension took 0.57-0.59 us; content_hash 2.2 -> 1.6 us (timeit, best of 7).
    body = dict(resource)
    body.pop("meta", None)
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
    """(system, code) of a CodeableConcept's first coding (a resource's category). An index,
    not a loop (_search_text 7.3k -> 5.4k instructions a resource, perf, bench.icount's
    readings, when this was written in line there)."""
    if isinstance(concept, dict):
        codings = concept.get("coding")
        if codings:
            first = codings[0]
            return first.get("system"), first.get("code")
    return None, None


def _search_text(resource: dict[str, Any]) -> tuple[Any, ...]:
    """subject, code_system, code, second_code_system, second_code, category, status, and the
    effective instant as the resource gives it (unparsed): the order of ``_COLUMNS``."""
    if resource["resourceType"] == "Patient":
        subject_ref: str | None = f"Patient/{resource['id']}"
    else:
        subject = resource.get("subject") or resource.get("patient")
        subject_ref = subject.get("reference") if isinstance(subject, dict) else None
    system = code = second_system = second_code = None
    concept = resource.get("code")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if codings:  # (in line, not _first_coding: one resource after another comes here)
        first = codings[0]
        system, code = first.get("system"), first.get("code")
        if len(codings) > 1 and (second_code := codings[1].get("code") or None):
            second_system = codings[1].get("system")
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
    return (subject_ref, system, code, second_system, second_code, category,
            resource.get("status"), effective)


def search_columns(resource: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns of a resource: subject, first and second code, category, status,
    effective."""
    *values, effective = _search_text(resource)
    return dict(zip(("subject", "code_system", "code", "second_code_system", "second_code",
                     "category", "status", "effective"),
                    (*values, _parse_instant(effective)), strict=True))


def _extra_tokens(resource: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The codings of ``code`` from the third on (the first two have columns), as tokens."""
    codings = (resource.get("code") or {}).get("coding") or []
    if codings.__class__ is list and len(codings) < 3:
        return []  # most resources: one or two codings, no slice and no comprehension to build
    return [
        (resource["resourceType"], resource["id"], "code", c.get("system") or "", c["code"])
        for c in codings[2:] if c.get("code")
    ]


# The upsert is written as SQL text, not through SQLAlchemy's insert().on_conflict_do_update():
# for 500 resources SQLAlchemy processed 6,500 bind parameters in Python, and psycopg re-parsed
# the 6,500-placeholder statement it rendered on every call (too long for its cache). Rows go in
# as one multi-row VALUES on SQLite and as column arrays through unnest() on PostgreSQL: one short
# constant statement that psycopg prepares once. The arrays are sent in binary (%b): in text
# format psycopg escaped every element with a regex, and resource JSON is full of quotes.
# Measured per resource, upsert of 500-reading messages, this process's CPU: SQLite 38 → 31 µs
# (SQLite's own B-tree work included); PostgreSQL 134 → 14 µs.
# A staged row holds the ``_STAGED`` columns; version 1 and the write's ``last_updated`` are
# added by the statement, so rows can be made before the transaction (``stage``) and
# ``lastUpdated`` is still the time of the write.
_STAGED = ("res_type", "res_id", "content_hash", "subject", "code_system", "code",
           "second_code_system", "second_code", "category", "status", "effective", "message_id",
           "content")
_COLUMNS = (*_STAGED, "version_id", "last_updated")
_ON_CONFLICT = (
    " ON CONFLICT (res_type, res_id) DO UPDATE SET version_id = resource.version_id + 1, "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("res_type", "res_id",
                                                                       "version_id"))
    + " WHERE resource.content_hash <> excluded.content_hash"
    " RETURNING res_type, res_id, version_id, subject"
)
_PG_TYPES = ("varchar", "varchar", "varchar", "varchar", "varchar", "varchar", "varchar",
             "varchar", "varchar", "varchar", "timestamptz", "varchar", "text")
_PG_UPSERT = (
    f"INSERT INTO resource ({', '.join(_COLUMNS)}) SELECT *, 1, %b::timestamptz FROM unnest("
    + ", ".join(f"%b::{t}[]" for t in _PG_TYPES) + ")" + _ON_CONFLICT
)
_PG_TOKENS = ("INSERT INTO resource_token (res_type, res_id, param, system, code) "
              "SELECT * FROM unnest(%b::varchar[], %b::varchar[], %b::varchar[], %b::varchar[], "
              "%b::varchar[]) ON CONFLICT DO NOTHING")
_SQLITE_TOKENS = ("INSERT INTO resource_token (res_type, res_id, param, system, code) "
                  "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_SQLITE_ROWS_PER_STATEMENT = 1000  # 13,001 variables: under SQLite's 32,766
# The write's time is bound once per statement, as its first variable: the rows are a VALUES
# list of the staged columns alone, selected with the version and the time added ("WHERE true"
# tells SQLite's parser the ON CONFLICT is the upsert's, not a join's). Binding the time in every
# row copied each row into a tuple one item longer and bound the time a thousand times a
# statement: commit 115.8k -> 113.1k instructions a reading (bench.icount, 4,000 readings).
# (Sharing one numbered variable ?N among the rows instead made SQLite look each ?N up in a
# list of all of them, sqlite3VListNumToName, quadratic: 16 % of the worker's time in py-spy.)
_SQLITE_ROW = "(" + ", ".join("?" * len(_STAGED)) + ")"
_sqlite_statements: dict[tuple[int, bool], str] = {}

Row = tuple[Any, ...]  # the _STAGED columns
Token = tuple[str, str, str, str, str]


def _sqlite_upsert(rows: int, *, returning: bool = True) -> str:
    """The upsert of ``rows`` rows; its variables: the write's time, then the rows' columns."""
    statement = _sqlite_statements.get((rows, returning))
    if statement is None:
        statement = (f"INSERT INTO resource ({', '.join(_COLUMNS)}) SELECT *, 1, ? FROM "
                     f"(VALUES {', '.join([_SQLITE_ROW] * rows)}) WHERE true"
                     + (_ON_CONFLICT if returning else _ON_CONFLICT.split(" RETURNING ")[0]))
        _sqlite_statements[(rows, returning)] = statement
    return statement


_sqlite_instant = sqlite_time  # (the name this module's callers and tests use)


def _sqlite_effective(value: Any) -> str | None:
    """``_sqlite_instant(_parse_instant(value))``. The text ``isoformat`` writes for a UTC time
    (``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00``: every reading's effectiveDateTime) holds the
    stored text's digits already, so they are cut from it once ``fromisoformat`` has checked it
    is an instant; the parsed datetime formatted field by field cost 0.93 us a resource, this
    0.47 (timeit, thread time, best of 9). ``tests/test_store_resources.py`` checks they agree."""
    if value.__class__ is str:
        size = len(value)
        if ((size == 25 or (size == 32 and value[19] == ".")) and value.endswith("+00:00")
                and value[10] == "T" and value[4] == value[7] == "-"
                and value[13] == value[16] == ":"):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                return None
            return (f"{value[:10]} {value[11:26]}" if size == 32
                    else f"{value[:10]} {value[11:19]}.000000")
    return _sqlite_instant(_parse_instant(value))


def _instant_writer(dialect: Dialect) -> Callable[[datetime | None], Any]:
    """How this dialect's DateTime column stores a value (hub.store.dialect.time_writer)."""
    return time_writer(R.c.effective.type, dialect)


@dataclass(slots=True)
class Staged:
    """Resources made rows: all the per-resource work of a write that needs no database
    (search columns, content hash, JSON), so it can be done before the write transaction or in
    another process. ``rows`` is keyed by (type, id), in order; a later resource with an id
    already staged replaces it (an upsert may hit a row once)."""

    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)


@lru_cache(maxsize=16)
def _effective_writer(dialect: Dialect) -> Callable[[Any], Any]:
    """The stored value of an effective instant given as the resource's text (None if it is
    not one). Found once per dialect, not asked of SQLAlchemy's column type on every ``stage``
    call (measured together with ``_unchanging`` above)."""
    stored = _instant_writer(dialect)
    if stored is _sqlite_instant:
        return _sqlite_effective

    def parsed(value: Any) -> Any:
        instant = _parse_instant(value)
        return None if instant is None else stored(instant)
    return parsed


# What ``stage`` derives from a resource without ``meta`` (content hash, search text, extra
# tokens), by its JSON: the Devices of a PCD-01 monitor's tree come again, unchanged, in every
# message it sends (3 a message in bench.hl7_mllp), and their JSON, made for the row anyway,
# is the key. Equal JSON is equal content, so equal hash, columns and tokens: the row is the
# one ``content_hash`` and ``_search_text`` would give. Resources with ``meta`` (Observations:
# a new one every time) are not kept. Measured with the per-dialect writer above: prepare
# 1,793k -> 1,680k instructions an HL7v2 message (bench.hl7_cost prepare, 800 against 0).
_UNCHANGING_LIMIT = 10_000
_unchanging: dict[str, tuple[str, tuple[Any, ...], list[Token]]] = {}


def _derived(res: dict[str, Any], content: str) -> tuple[str, tuple[Any, ...], list[Token]]:
    """(content hash, search text, extra tokens) of ``res``, whose JSON is ``content``."""
    if "meta" in res:
        return content_hash(res), _search_text(res), _extra_tokens(res)
    found = _unchanging.get(content)
    if found is None:
        if len(_unchanging) >= _UNCHANGING_LIMIT:
            _unchanging.clear()
        found = _unchanging[content] = (content_hash(res), _search_text(res),
                                        _extra_tokens(res))
    return found


def stage(dialect: Dialect, resources: list[dict[str, Any]], message_id: str | None) -> Staged:
    """Rows for ``resources`` (``meta.versionId``/``lastUpdated`` are dropped from them: those
    come from the columns)."""
    effective_of = _effective_writer(dialect)
    staged = Staged()
    rows, tokens = staged.rows, staged.tokens
    for res in resources:
        meta = res.get("meta")
        if meta:
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
        content = orjson.dumps(res).decode()
        digest, (subject, system, code, system2, code2, category, status, effective), extra = \
            _derived(res, content)
        key = (res["resourceType"], res["id"])
        rows[key] = (key[0], key[1], digest, subject, system, code, system2, code2, category,
                     status, effective_of(effective), message_id, content)
        if extra:
            tokens.extend(extra)
    return staged


def upsert(
    conn: Connection, resources: list[dict[str, Any]], message_id: str | None
) -> list[Written]:
    """Insert or update resources by (type, id); returns only those whose content changed."""
    if not resources:
        return []
    staged = stage(conn.dialect, resources, message_id)
    return write(conn, list(staged.rows.values()), staged.tokens)


def write(conn: Connection, rows: list[Row], tokens: list[Token], *,
          unreported: str | None = None) -> list[Written]:
    """Upsert staged rows (each (type, id) at most once); returns those whose content changed.
    ``unreported``: a resource type the caller need not hear about; the list may leave out
    rows of that type (on SQLite they are written without RETURNING, below)."""
    if not rows:
        return []
    if unreported is not None and conn.dialect.name == "sqlite":
        bulk = [row for row in rows if row[0] == unreported]
        if bulk:
            _write_sqlite_unreturned(conn, bulk, [t for t in tokens if t[0] == unreported])
            return write(conn, [row for row in rows if row[0] != unreported],
                         [t for t in tokens if t[0] != unreported])
    now = _instant_writer(conn.dialect)(utcnow())
    if conn.dialect.name == "postgresql":
        columns = [list(column) for column in zip(*rows, strict=True)]
        result = conn.exec_driver_sql(_PG_UPSERT, (now, *columns)).all()
    else:
        result = []
        for start in range(0, len(rows), _SQLITE_ROWS_PER_STATEMENT):
            chunk = rows[start:start + _SQLITE_ROWS_PER_STATEMENT]
            result.extend(conn.exec_driver_sql(_sqlite_upsert(len(chunk)),
                                               (now, *chain.from_iterable(chunk))).all())
    # A new version may carry other codings: its old extra tokens go, or a search by a code it
    # no longer has would still find it. Only updates pay this (inserts have no tokens yet).
    updated = [{"t": r[0], "i": r[1]} for r in result if r[2] > 1]
    if updated:
        conn.execute(TOK.delete().where(TOK.c.res_type == bindparam("t"),
                                        TOK.c.res_id == bindparam("i")), updated)
    if tokens:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(_PG_TOKENS, tuple(list(c) for c in zip(*tokens, strict=True)))
        else:
            conn.exec_driver_sql(_SQLITE_TOKENS, tokens)
    return [Written(r[0], r[1], r[2], r[3]) for r in result]


# SQLite's RETURNING collects the rows of an upsert in a temporary table and hands them back
# one by one: for the worker's commits it was a fifth of the write. Measured, resource write +
# commit of 100,000 readings' rows in commits of 10,000 (this process's CPU per row, best of 3,
# load 2.9): with RETURNING 15.9 us, without 11.9 us. Without it, which rows existed before is
# told by the rowids: a new row gets a rowid above every existing one (sqlite.org/autoinc.html),
# so if as many rows lie above the old largest rowid as were written, every row is new.
_SQLITE_MAX_ROWID = "SELECT max(rowid) FROM resource"
_SQLITE_NEW_SINCE = "SELECT count(*) FROM resource WHERE rowid > ?"
_SQLITE_DROP_TOKENS = "DELETE FROM resource_token WHERE res_type = ? AND res_id = ?"


def _write_sqlite_unreturned(conn: Connection, rows: list[Row], tokens: list[Token]) -> None:
    """``write`` on SQLite without RETURNING. When some rows existed before (a message
    processed again, a changed reading), every written row's old extra tokens go before its
    staged ones are inserted: an updated row's old codings must not stay searchable, and an
    unchanged row gets the very tokens it had (its content, hence its tokens, are the same)."""
    now = _instant_writer(conn.dialect)(utcnow())
    before = conn.exec_driver_sql(_SQLITE_MAX_ROWID).scalar() or 0
    for start in range(0, len(rows), _SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start:start + _SQLITE_ROWS_PER_STATEMENT]
        conn.exec_driver_sql(_sqlite_upsert(len(chunk), returning=False),
                             (now, *chain.from_iterable(chunk)))
    added = conn.exec_driver_sql(_SQLITE_NEW_SINCE, (before,)).scalar() or 0
    if added < len(rows):
        conn.exec_driver_sql(_SQLITE_DROP_TOKENS, [(row[0], row[1]) for row in rows])
    if tokens:
        conn.exec_driver_sql(_SQLITE_TOKENS, tokens)


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
