"""The FHIR R4 read API under ``/fhir``: ``metadata``, read, and search (Bundle ``searchset``).

* ``GET /fhir/metadata`` — the CapabilityStatement, built from ``hub.fhir.capability`` (the same
  tables the parser below uses, so it lists exactly what is supported).
* ``GET /fhir/{type}/{id}`` — the current version with ``meta.versionId``/``lastUpdated``,
  ``ETag: W/"n"`` and ``Last-Modified``; 404 OperationOutcome when absent or the type is not one
  of the hub's.
* ``GET /fhir/{type}?...`` — search. Unknown parameters are a 400 naming the parameter (or, with
  ``Prefer: handling=lenient``, skipped and reported in an OperationOutcome entry). Paging is by
  keyset (``hub.store.search``): the ``next``/``previous`` links carry an opaque ``_cursor`` with
  the sort value and id of the page's boundary row, so walking the pages while readings arrive
  yields no duplicates and no gaps. ``total`` counts every match.

Every endpoint needs an API key; any valid key may read (keys are scoped for posting).
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from hub import __version__
from hub.api.deps import ClientDep, HubDep
from hub.api.errors import FHIR_JSON, ApiError
from hub.api.fhir_query import ID_RE, ParsedSearch, QueryError, encode_cursor, parse_search
from hub.fhir.capability import RESOURCE_TYPES, capability_statement
from hub.fhir.outcome import operation_outcome
from hub.store import resources
from hub.store import search as q
from hub.store.db import as_utc

router = APIRouter(prefix="/fhir", tags=["fhir"])


class FhirResponse(Response):
    """``application/fhir+json`` rendered with orjson (search pages can hold 1000 resources)."""

    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return b"" if content is None else orjson.dumps(content)  # None: no body (return=minimal)


def fhir_base(request: Request) -> str:
    """Absolute base of the FHIR API as the client reached it (for fullUrl and links)."""
    return str(request.base_url).rstrip("/") + "/fhir"


def require_type(res_type: str) -> str:
    """404 unless the hub serves this resource type (the name is not echoed: it is client text)."""
    if res_type not in RESOURCE_TYPES:
        raise ApiError(404, "resource type not supported (supported: "
                            f"{', '.join(RESOURCE_TYPES)})")
    return res_type


def version_headers(version_id: int, last_updated: datetime) -> dict[str, str]:
    return {"ETag": f'W/"{version_id}"',
            "Last-Modified": format_datetime(as_utc(last_updated) or last_updated, usegmt=True)}


def wants_lenient(prefer: str | None) -> bool:
    tokens = [t.strip().lower() for t in (prefer or "").replace(";", ",").split(",")]
    return "handling=lenient" in tokens


@router.get("/metadata", response_class=FhirResponse)
async def metadata(request: Request, client: ClientDep) -> FhirResponse:
    """The CapabilityStatement: exactly the types, interactions and search parameters served."""
    return FhirResponse(capability_statement(fhir_base(request), __version__))


@router.get("/{res_type}", response_class=FhirResponse)
async def search_type(
    res_type: str, request: Request, hub: HubDep, client: ClientDep,
    prefer: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Search (see the CapabilityStatement for the parameters of each type)."""
    require_type(res_type)
    zone = ZoneInfo(hub.settings.default_timezone)
    try:
        parsed = parse_search(res_type, list(request.query_params.multi_items()),
                              default_zone=zone, lenient=wants_lenient(prefer))
    except QueryError as exc:
        raise ApiError(400, str(exc), expression=[exc.param]) from None

    def run() -> tuple[int, q.Page]:
        with hub.engine.connect() as conn:
            total = q.count(conn, res_type, parsed.criteria)
            if parsed.count == 0:
                return total, q.Page([], more_after=False, more_before=False)
            page = q.search(conn, res_type, parsed.criteria, sort=parsed.sort,
                            limit=parsed.count, keyset=parsed.keyset)
            return total, page

    total, page = await run_in_threadpool(run)
    return FhirResponse(searchset(fhir_base(request), res_type, parsed, total, page))


def searchset(base: str, res_type: str, parsed: ParsedSearch, total: int,
              page: q.Page) -> dict[str, Any]:
    """The Bundle for one page, with self/next/previous links that repeat the search."""

    def link(relation: str, cursor: q.Keyset | None) -> dict[str, str]:
        params = list(parsed.echo)
        if cursor is not None:
            params.append(("_cursor", encode_cursor(parsed.sort_spec, cursor)))
        query = urlencode(params)
        return {"relation": relation, "url": f"{base}/{res_type}" + (f"?{query}" if query else "")}

    links = [link("self", parsed.keyset)]
    if page.rows and page.more_after:
        last = page.rows[-1]
        links.append(link("next", q.Keyset(True, last.sort_value, last.res_id)))
    if page.rows and page.more_before:
        first = page.rows[0]
        links.append(link("previous", q.Keyset(False, first.sort_value, first.res_id)))
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base}/{res_type}/{row.res_id}",
         "resource": resources.with_meta(row.content, row.version_id, row.last_updated),
         "search": {"mode": "match"}}
        for row in page.rows
    ]
    if parsed.ignored:
        note = operation_outcome(
            "not-supported", "ignored (Prefer: handling=lenient): " + ", ".join(parsed.ignored),
            severity="warning")
        entries.append({"resource": note, "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total,
                              "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


@router.get("/{res_type}/{res_id}", response_class=FhirResponse)
async def read(res_type: str, res_id: str, hub: HubDep, client: ClientDep) -> FhirResponse:
    """The current version of one resource."""
    require_type(res_type)
    if not ID_RE.match(res_id):
        raise ApiError(404, f"no {res_type} with that id")

    def fetch() -> q.Stored | None:
        with hub.engine.connect() as conn:
            return q.stored(conn, [(res_type, res_id)]).get((res_type, res_id))

    found = await run_in_threadpool(fetch)
    if found is None:
        raise ApiError(404, f"no {res_type} with that id")
    return FhirResponse(resources.with_meta(found.content, found.version_id, found.last_updated),
                        headers=version_headers(found.version_id, found.last_updated))
