"""FHIR search syntax → the store's plain criteria (``hub.store.search``).

Follows R4's search rules (http://hl7.org/fhir/R4/search.html): repeated parameters AND,
comma-separated values OR, ``\\,`` ``\\|`` ``\\$`` ``\\\\`` escape, token forms ``code``,
``system|code`` and ``|code``, date prefixes with a partial date meaning its whole period.
Anything not understood is a ``QueryError`` (→ 400 OperationOutcome naming the parameter), never
silently ignored — unless the client asked for ``Prefer: handling=lenient``, when unknown
parameters are skipped and reported back in the Bundle.

Errors name the parameter and the problem, not the value (a value may be an identifier).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import cast

import orjson

from hub.fhir.capability import (
    CATEGORY_SYSTEMS,
    DEFAULT_COUNT,
    MAX_COUNT,
    SORTS,
    SUBJECT_TARGETS,
    SearchParam,
    identifier_id,
    search_param,
)
from hub.store import search as q

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATE_RE = re.compile(
    r"^(?P<prefix>[a-z]{2})?(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|[+\- ]\d{2}:\d{2})?)?)?)?$")
_PREFIXES = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "sa", "eb"})
_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
# Result parameters the hub understands (they shape the answer rather than filter it).
_RESULT_PARAMS = frozenset({"_count", "_sort", "_cursor", "_format", "_pretty"})


class QueryError(Exception):
    """A search the hub cannot answer exactly; ``param`` is the offending parameter's name."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"search parameter '{param}': {problem}")
        self.param = param


@dataclass
class ParsedSearch:
    criteria: list[q.Criterion] = field(default_factory=list)
    sort: q.Sort = field(default_factory=q.Sort)
    sort_spec: str | None = None
    count: int = DEFAULT_COUNT
    keyset: q.Keyset | None = None
    echo: list[tuple[str, str]] = field(default_factory=list)  # understood params, for links
    ignored: list[str] = field(default_factory=list)  # names skipped under handling=lenient


def split_unescaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not backslash-escaped; escapes are kept for the next split."""
    parts, current, escaped = [], [], False
    for ch in value:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", value)


def parse_token(name: str, raw: str) -> q.Token:
    parts = split_unescaped(raw, "|")
    if len(parts) == 1:
        code = unescape(parts[0])
        system: str | None = None
    elif len(parts) == 2:
        system, code = unescape(parts[0]), unescape(parts[1])
    else:
        raise QueryError(name, "a token is code, system|code or |code")
    if not code:
        raise QueryError(name, "a code is required (system| alone is not supported)")
    return q.Token(system, code)


def _zone_offset(tz_text: str) -> timedelta:
    sign = -1 if tz_text[0] == "-" else 1  # a space is a '+' that URL decoding turned into one
    hours, minutes = int(tz_text[1:3]), int(tz_text[4:6])
    return sign * timedelta(hours=hours, minutes=minutes)


def parse_date(name: str, raw: str, default_zone: tzinfo) -> q.DateValue:
    """A date search value; its precision decides the period it denotes."""
    m = _DATE_RE.match(raw)
    if m is None:
        raise QueryError(name, "expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|±hh:mm]]]]")
    prefix = m["prefix"] or "eq"
    if prefix not in _PREFIXES:
        raise QueryError(name, "supported prefixes are eq, ne, lt, le, gt, ge, sa, eb")
    zone: tzinfo = default_zone
    if m["tz"]:
        zone = UTC if m["tz"] == "Z" else timezone(_zone_offset(m["tz"]))
    try:
        year = int(m["year"])
        if m["month"] is None:
            start = datetime(year, 1, 1, tzinfo=zone)
            end = datetime(year + 1, 1, 1, tzinfo=zone)
        elif m["day"] is None:
            month = int(m["month"])
            start = datetime(year, month, 1, tzinfo=zone)
            end = start + timedelta(days=calendar.monthrange(year, month)[1])
        else:
            start = datetime(year, int(m["month"]), int(m["day"]), tzinfo=zone)
            if m["hour"] is None:
                end = start + timedelta(days=1)
            else:
                start = start.replace(hour=int(m["hour"]), minute=int(m["minute"]),
                                      second=int(m["second"] or 0))
                if m["frac"]:
                    digits = m["frac"]
                    start = start.replace(microsecond=int(digits[:6].ljust(6, "0")))
                    end = start + timedelta(microseconds=max(1, 10 ** (6 - min(len(digits), 6))))
                elif m["second"]:
                    end = start + timedelta(seconds=1)
                else:
                    end = start + timedelta(minutes=1)
    except ValueError:
        raise QueryError(name, "not a valid date") from None
    # Wall-clock arithmetic above keeps whole local days/months across DST; compare in UTC.
    return q.DateValue(cast(q.Prefix, prefix), start.astimezone(UTC), end.astimezone(UTC))


def _reference(name: str, raw: str, res_type: str, patient_only: bool) -> list[str]:
    value = unescape(raw)
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        target, rid = parts[-2], parts[-1]
        if patient_only and target != "Patient":
            raise QueryError(name, "must reference a Patient")
        if not ID_RE.match(rid):
            raise QueryError(name, "not a valid reference")
        return [f"{target}/{rid}"]
    if len(parts) != 1 or not ID_RE.match(value):
        raise QueryError(name, "expected Type/id or id")
    targets = ("Patient",) if patient_only else SUBJECT_TARGETS[res_type]
    return [f"{t}/{value}" for t in targets]


def _criterion(res_type: str, param: SearchParam, values: list[str],
               default_zone: tzinfo) -> q.Criterion:
    name = param.name
    if any(v == "" for v in values):
        raise QueryError(name, "empty value")
    match param.kind:
        case "id":
            ids = [unescape(v) for v in values]
            if not all(ID_RE.match(i) for i in ids):
                raise QueryError(name, "not a valid id")
            return q.IdIn(tuple(ids))
        case "patient" | "subject":
            refs = [r for v in values
                    for r in _reference(name, v, res_type, param.kind == "patient")]
            return q.SubjectIn(tuple(refs))
        case "code":
            return q.CodeIn(tuple(parse_token(name, v) for v in values))
        case "identifier":
            tokens = tuple(parse_token(name, v) for v in values)
            # Resources created through the FHIR API carry the id of their first identifier
            # but are not bound in the identity registry: look that id up as well.
            created = tuple(identifier_id(res_type, t.system, t.code) for t in tokens if t.system)
            return q.IdentifierIn(tokens, created)
        case "category":
            codes = []
            for v in values:
                token = parse_token(name, v)
                if token.system is not None and token.system != CATEGORY_SYSTEMS[res_type]:
                    raise QueryError(name, "only the code, or the standard category system "
                                           f"{CATEGORY_SYSTEMS[res_type]}|code, is indexed")
                codes.append(token.code)
            return q.ColumnIn("category", tuple(codes))
        case "status":
            codes = []
            for v in values:
                token = parse_token(name, v)
                if token.system is not None:
                    raise QueryError(name, "status is a code; give it without a system")
                codes.append(token.code)
            return q.ColumnIn("status", tuple(codes))
        case "effective" | "last_updated":
            return q.DateIn(param.kind, tuple(parse_date(name, v, default_zone) for v in values))
    raise QueryError(name, "not supported")  # pragma: no cover - kinds are exhaustive


def _count(raw: str) -> int:
    if not raw.isdigit():
        raise QueryError("_count", "must be a non-negative integer")
    return min(int(raw), MAX_COUNT)


def _sort(res_type: str, raw: str) -> q.Sort:
    key = raw[1:] if raw.startswith("-") else raw
    kind = SORTS[res_type].get(key)
    if kind is None or "," in raw:
        allowed = ", ".join(SORTS[res_type])
        raise QueryError("_sort", f"one key of: {allowed} (prefix - for descending)")
    column: q.SortColumn = "id" if kind == "id" else kind  # type: ignore[assignment]
    return q.Sort(column, raw.startswith("-"))


def encode_cursor(spec: str | None, key: q.Keyset) -> str:
    payload = [spec or "", key.forward, key.value.isoformat() if key.value else None, key.res_id]
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_cursor(spec: str | None, raw: str) -> q.Keyset:
    try:
        padded = raw + "=" * (-len(raw) % 4)
        sort_spec, forward, value, res_id = orjson.loads(base64.urlsafe_b64decode(padded))
        when = datetime.fromisoformat(value) if value is not None else None
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise QueryError("_cursor", "not a cursor this server issued") from None
    if sort_spec != (spec or "") or not isinstance(forward, bool) or not isinstance(res_id, str):
        raise QueryError("_cursor", "belongs to a search with another _sort")
    return q.Keyset(forward, when, res_id)


def parse_search(
    res_type: str, items: list[tuple[str, str]], *, default_zone: tzinfo, lenient: bool = False,
) -> ParsedSearch:
    """The query string of ``GET /fhir/{res_type}`` as criteria, sort, page size and cursor."""
    out = ParsedSearch()
    seen_result: set[str] = set()
    cursor: str | None = None
    for name, raw in items:
        if name in _RESULT_PARAMS:
            if name in seen_result:
                raise QueryError(name, "given more than once")
            seen_result.add(name)
            if name == "_count":
                out.count = _count(raw)
                out.echo.append((name, str(out.count)))
            elif name == "_sort":
                out.sort, out.sort_spec = _sort(res_type, raw), raw
                out.echo.append((name, raw))
            elif name == "_cursor":
                cursor = raw
            elif name == "_format" and raw.split(";")[0].strip().lower() not in _JSON_FORMATS:
                raise QueryError(name, "only JSON is served")
            continue
        base, _, modifier = name.partition(":")
        param = search_param(res_type, base)
        if param is None or modifier:
            if lenient:
                out.ignored.append(name)
                continue
            if param is None:
                raise QueryError(name, f"not supported for {res_type} (see /fhir/metadata)")
            raise QueryError(name, "modifiers are not supported")
        out.criteria.append(_criterion(res_type, param, split_unescaped(raw, ","),
                                       default_zone))
        out.echo.append((name, raw))
    if cursor is not None:
        out.keyset = decode_cursor(out.sort_spec, cursor)
    return out
