"""FHIR search as SQL over the indexed columns of ``resource``, ``resource_token`` and the
identity registry — never over the content JSON.

The API parses FHIR's syntax (prefixes, tokens, partial dates) into the plain criteria below; this
module turns them into one ``SELECT`` with keyset paging:

* every criterion maps to indexed columns: ``(res_type, res_id)`` primary key, ``subject``/``code``
  /``effective`` (``ix_resource_subject_code_eff``, ``ix_resource_type_eff``,
  ``ix_resource_type_code``), the second coding (``ix_resource_type_second_code``), ``last_updated``
  (``ix_resource_type_updated``), the further codings in ``resource_token`` (``ix_token_lookup``)
  and ``registry_identifier``'s primary key;
* paging is by key, not offset: a page continues strictly after (or before) the sort value and id
  of the row that ended the previous page, so rows inserted meanwhile never shift a page into a
  duplicate or a gap. Rows without a sort value (NULL ``effective``) sort last in either
  direction, with the id breaking ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, true, tuple_
from sqlalchemy.engine import Connection

from hub.store.db import as_utc
from hub.store.models import RegistryIdentifier, Resource, ResourceToken

R = Resource.__table__  # type: ignore[attr-defined]
TOK = ResourceToken.__table__  # type: ignore[attr-defined]
IDX = RegistryIdentifier.__table__  # type: ignore[attr-defined]

Prefix = Literal["eq", "ne", "lt", "le", "gt", "ge", "sa", "eb"]
SortColumn = Literal["effective", "last_updated", "id"]


@dataclass(frozen=True, slots=True)
class Token:
    """A token search value: ``system`` None = any system, ``""`` = no system."""

    system: str | None
    code: str


@dataclass(frozen=True, slots=True)
class DateValue:
    """A date search value: the half-open period [start, end) its precision denotes."""

    prefix: Prefix
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class IdIn:
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubjectIn:
    references: tuple[str, ...]  # "Patient/x"


@dataclass(frozen=True, slots=True)
class CodeIn:
    tokens: tuple[Token, ...]  # any coding of the resource's ``code`` matches


@dataclass(frozen=True, slots=True)
class ColumnIn:
    column: Literal["category", "status"]
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DateIn:
    column: Literal["effective", "last_updated"]
    values: tuple[DateValue, ...]  # OR of the values (one parameter's comma-separated list)


@dataclass(frozen=True, slots=True)
class IdentifierIn:
    """Registry identifiers (Patient, Device); ``ids`` adds known deterministic candidates."""

    tokens: tuple[Token, ...]
    ids: tuple[str, ...] = ()


Criterion = IdIn | SubjectIn | CodeIn | ColumnIn | DateIn | IdentifierIn


@dataclass(frozen=True, slots=True)
class Sort:
    column: SortColumn = "id"
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Keyset:
    """Where a page starts: strictly after (``forward``) or before the row (value, id)."""

    forward: bool
    value: datetime | None
    res_id: str


@dataclass(frozen=True, slots=True)
class Row:
    res_id: str
    content: str
    version_id: int
    last_updated: datetime
    sort_value: datetime | None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    more_after: bool  # rows exist beyond the page's last row
    more_before: bool  # rows exist before the page's first row


@dataclass(frozen=True, slots=True)
class Stored:
    """A resource's current version, with the message that last wrote it (for write answers)."""

    res_type: str
    res_id: str
    content: str
    version_id: int
    last_updated: datetime
    message_id: str | None


def _date_match(col: Any, v: DateValue) -> ColumnElement[bool]:
    # The stored value is an instant; the search value is the period [start, end).
    start, end = as_utc(v.start), as_utc(v.end)
    match v.prefix:
        case "eq":
            return and_(col >= start, col < end)
        case "ne":
            return or_(col < start, col >= end)
        case "lt" | "eb":
            return cast(ColumnElement[bool], col < start)
        case "le":
            return cast(ColumnElement[bool], col < end)
        case "gt" | "sa":
            return cast(ColumnElement[bool], col >= end)
        case "ge":
            return cast(ColumnElement[bool], col >= start)
    raise ValueError(f"unknown prefix {v.prefix}")  # pragma: no cover - Literal is exhaustive


def _token_system(col: Any, system: str | None) -> ColumnElement[bool]:
    if system is None:
        return true()
    if system == "":
        return or_(col.is_(None), col == "")
    return cast(ColumnElement[bool], col == system)


def _condition(res_type: str, c: Criterion) -> ColumnElement[bool]:
    if isinstance(c, IdIn):
        return cast(ColumnElement[bool], R.c.res_id.in_(c.ids))
    if isinstance(c, SubjectIn):
        return cast(ColumnElement[bool], R.c.subject.in_(c.references))
    if isinstance(c, ColumnIn):
        return cast(ColumnElement[bool], R.c[c.column].in_(c.values))
    if isinstance(c, DateIn):
        col = R.c[c.column]
        return or_(*(_date_match(col, v) for v in c.values))
    if isinstance(c, CodeIn):
        parts: list[ColumnElement[bool]] = []
        for t in c.tokens:
            parts.append(and_(R.c.code == t.code, _token_system(R.c.code_system, t.system)))
            parts.append(and_(R.c.second_code == t.code,
                              _token_system(R.c.second_code_system, t.system)))
            further = select(TOK.c.res_id).where(
                TOK.c.res_type == res_type, TOK.c.param == "code", TOK.c.code == t.code,
                _token_system(TOK.c.system, t.system))
            parts.append(R.c.res_id.in_(further))
        return or_(*parts)
    if isinstance(c, IdentifierIn):
        parts = []
        for t in c.tokens:
            registered = select(IDX.c.res_id).where(
                IDX.c.res_type == res_type, IDX.c.value == t.code,
                _token_system(IDX.c.system, t.system))
            parts.append(R.c.res_id.in_(registered))
        if c.ids:
            parts.append(R.c.res_id.in_(c.ids))
        return or_(*parts) if parts else false()
    raise TypeError(f"unknown criterion {type(c).__name__}")  # pragma: no cover


def _where(res_type: str, criteria: Sequence[Criterion]) -> list[ColumnElement[bool]]:
    return [R.c.res_type == res_type, *(_condition(res_type, c) for c in criteria)]


def count(conn: Connection, res_type: str, criteria: Sequence[Criterion]) -> int:
    """How many resources match (Bundle.total)."""
    query = select(func.count()).select_from(R).where(*_where(res_type, criteria))
    return int(conn.execute(query).scalar_one())


def _sort_col(sort: Sort) -> Any:
    return R.c.res_id if sort.column == "id" else R.c[sort.column]


def _cmp(left: Any, right: Any, less: bool) -> ColumnElement[bool]:
    return cast(ColumnElement[bool], left < right if less else left > right)


def _after(sort: Sort, key: Keyset) -> ColumnElement[bool]:
    """Rows strictly after ``key`` in the page order (NULL sort values last)."""
    col, less = _sort_col(sort), sort.descending
    if sort.column == "id":
        return _cmp(R.c.res_id, key.res_id, less)
    if key.value is None:
        return and_(col.is_(None), _cmp(R.c.res_id, key.res_id, less))
    value = as_utc(key.value)
    return or_(_cmp(col, value, less), and_(col == value, _cmp(R.c.res_id, key.res_id, less)),
               col.is_(None))


def _before(sort: Sort, key: Keyset) -> ColumnElement[bool]:
    """Rows strictly before ``key`` in the page order."""
    col, less = _sort_col(sort), not sort.descending
    if sort.column == "id":
        return _cmp(R.c.res_id, key.res_id, less)
    if key.value is None:
        return or_(col.is_not(None), and_(col.is_(None), _cmp(R.c.res_id, key.res_id, less)))
    value = as_utc(key.value)
    return and_(col.is_not(None),
                or_(_cmp(col, value, less), and_(col == value, _cmp(R.c.res_id, key.res_id, less))))


def _ordered(query: Select[Any], sort: Sort, reverse: bool) -> Select[Any]:
    descending = sort.descending != reverse
    col = _sort_col(sort)
    id_order = R.c.res_id.desc() if descending else R.c.res_id.asc()
    if sort.column == "id":
        return query.order_by(id_order)
    value_order = col.desc() if descending else col.asc()
    # NULLs last in page order; walking backwards they come first.
    value_order = value_order.nulls_first() if reverse else value_order.nulls_last()
    return query.order_by(value_order, id_order)


def search(
    conn: Connection, res_type: str, criteria: Sequence[Criterion], *, sort: Sort, limit: int,
    keyset: Keyset | None = None,
) -> Page:
    """One page of matches in ``sort`` order, starting at ``keyset`` (None = the first page)."""
    query = select(R.c.res_id, R.c.content, R.c.version_id, R.c.last_updated,
                   _sort_col(sort).label("sort_value")).where(*_where(res_type, criteria))
    backwards = keyset is not None and not keyset.forward
    if keyset is not None:
        query = query.where(_after(sort, keyset) if keyset.forward else _before(sort, keyset))
    query = _ordered(query, sort, reverse=backwards).limit(limit + 1)
    fetched = conn.execute(query).all()
    extra = len(fetched) > limit
    rows = [Row(r.res_id, r.content, r.version_id, as_utc(r.last_updated) or r.last_updated,
                None if sort.column == "id" else as_utc(r.sort_value))
            for r in fetched[:limit]]
    if backwards:
        rows.reverse()
        return Page(rows, more_after=True, more_before=extra)
    return Page(rows, more_after=extra, more_before=keyset is not None)


def stored(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
    """Current versions of resources by (type, id), with the message that last wrote each."""
    if not keys:
        return {}
    rows = conn.execute(
        select(R.c.res_type, R.c.res_id, R.c.content, R.c.version_id, R.c.last_updated,
               R.c.message_id).where(tuple_(R.c.res_type, R.c.res_id).in_(list(set(keys))))
    ).all()
    return {(r.res_type, r.res_id): Stored(r.res_type, r.res_id, r.content, r.version_id,
                                           as_utc(r.last_updated) or r.last_updated,
                                           r.message_id) for r in rows}


def versions(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Current version ids by (type, id); absent resources are missing from the answer."""
    if not keys:
        return {}
    rows = conn.execute(
        select(R.c.res_type, R.c.res_id, R.c.version_id)
        .where(tuple_(R.c.res_type, R.c.res_id).in_(list(set(keys))))
    ).all()
    return {(r.res_type, r.res_id): int(r.version_id) for r in rows}


def registered_id(conn: Connection, res_type: str, system: str, value: str) -> str | None:
    """The id the identity registry binds to this identifier (Patient, Device), if any."""
    found: str | None = conn.execute(
        select(IDX.c.res_id).where(IDX.c.res_type == res_type, IDX.c.system == system,
                                   IDX.c.value == value)
    ).scalar()
    return found


def conditional_matches(conn: Connection,
                        wanted: dict[tuple[str, str], tuple[str, str] | None],
                        message_id: str) -> dict[tuple[str, str], str]:
    """FHIR conditional creates (``Extraction.create_only``) whose match is already stored →
    the matched resource's ``Type/id``. A match is the target id itself or, for an identifier
    the registry has bound (Patient, Device), the bound id. A target this same message wrote
    (a replay) is no match: writing it again changes nothing."""
    found = stored(conn, list(wanted))
    matches: dict[tuple[str, str], str] = {}
    for (res_type, res_id), criteria in wanted.items():
        row = found.get((res_type, res_id))
        if row is not None and row.message_id != message_id:
            matches[(res_type, res_id)] = f"{res_type}/{res_id}"
            continue
        bound = registered_id(conn, res_type, *criteria) if criteria else None
        if bound is not None and bound != res_id:
            matches[(res_type, res_id)] = f"{res_type}/{bound}"
    return matches
