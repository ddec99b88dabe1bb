"""FHIR writes: ``POST /fhir/{type}`` (create, conditional create) and ``PUT /fhir/{type}/{id}``.

Design: the same durable path as every inbound message, answered synchronously.

1. The body is validated by the ``fhir`` connector's ``decode`` (fhir.resources.R4B). A bad body
   is still stored (status ``failed``, with the reason) and answered 400 with the location.
2. The raw body is committed to the inbox (source ``fhir``, channel ``fhir``) — the one write on
   the acknowledge path, exactly as for ``POST /ingest``. How it was sent travels with it as
   content-type parameters only the hub sets (``hub-update=<id>`` for PUT, ``hub-id=<id>`` for a
   conditional create), so the worker, a replay or crash recovery process it the same way.
3. The request then processes its own message through the real pipeline
   (``Pipeline.run_batch(..., only=[id])``, the worker's own step: connector → store → rules →
   outbox, with lineage), and answers from the store: 201 (this request created it) or 200, with the
   resource, ``Location``, ``ETag``. Should that take longer than ``SYNC_WAIT_SECS`` (a backlog,
   a database hiccup) the answer is 202 with the message id and the ``Location`` the resource
   will have — its id is deterministic, known at intake — and the worker finishes the job.

Nothing acknowledged is lost: every 2xx follows the inbox commit. Idempotency:

* create: ids come from the first identifier (``hub.fhir.capability.identifier_id``), so the
  same business resource posted twice is one resource; a repeated body is deduplicated by hash
  (or ``Idempotency-Key``) like any ingest.
* PUT: the dedupe key holds the target's current version and the body hash, so a retried PUT
  stores nothing new, while PUT A, PUT B, PUT A still ends at A. Same content → no new version.
* conditional create (``If-None-Exist: identifier=system|value``): a match is answered 200 and
  left untouched. Otherwise the dedupe key is the target id, so the inbox's unique constraint
  lets exactly one of many concurrent creates through, on SQLite and PostgreSQL alike; the others
  wait for it and answer 200 with the one resource.

Writes need an API key allowed to post to source ``fhir``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.api.fhir_query import ID_RE
from hub.api.fhir_read import FhirResponse, fhir_base, require_type, version_headers
from hub.api.ingest import media_type, read_capped
from hub.contracts import Connector
from hub.errors import DataError, UnknownSourceError
from hub.fhir.capability import identifier_criteria, identifier_id
from hub.fhir.outcome import operation_outcome
from hub.runtime import Hub
from hub.store import inbox, resources
from hub.store import search as q
from hub.store.api_keys import Client
from hub.store.db import write_tx

log = logging.getLogger("hub.api.fhir")
router = APIRouter(prefix="/fhir", tags=["fhir"])

SOURCE = "fhir"
CHANNEL = "fhir"
SYNC_WAIT_SECS = 10.0


@dataclass(frozen=True, slots=True)
class Body:
    content_type: str  # media type without parameters
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def fhir_connector(hub: Hub) -> Connector:
    try:
        return hub.connectors.get(SOURCE)
    except UnknownSourceError:
        raise ApiError(503, "FHIR writes need the 'fhir' connector, which is not installed",
                       code="not-supported") from None


def require_writer(client: Client) -> None:
    if not client.may_post(SOURCE):
        raise ApiError(403, f"this API key may not post to source '{SOURCE}'")


async def read_body(request: Request, hub: Hub, connector: Connector) -> Body:
    """415 for a content type the connector does not take; 413 past the body cap."""
    ctype = media_type(request.headers.get("content-type"))
    if ctype not in connector.content_types:
        allowed = ", ".join(sorted(connector.content_types))
        raise ApiError(415, f"content type '{ctype or 'none'}' not accepted (use {allowed})")
    return Body(ctype, await read_capped(request, hub.settings.max_body_bytes))


def decode(connector: Connector, body: Body, params: str = "") -> tuple[Any, DataError | None]:
    try:
        return connector.decode(body.data, body.content_type + params), None
    except DataError as exc:
        return None, exc


async def _receive(
    hub: Hub, client: Client, body: Body, *, dedupe_key: str | None, params: str,
    status: str, reason: str | None,
) -> inbox.Receipt:
    with hub.telemetry.intake(SOURCE, CHANNEL) as carrier:
        receipt = await run_in_threadpool(
            inbox.receive, hub.engine, source=SOURCE, channel=CHANNEL,
            content_type=body.content_type + params, body=body.data, dedupe_key=dedupe_key,
            client=client.name, status=status, error=reason,
            traceparent=carrier.get("traceparent"))
    hub.telemetry.count_outcome(SOURCE, "received")
    return receipt


async def refuse(hub: Hub, client: Client, body: Body, error: DataError) -> NoReturn:
    """Keep a refused body (status failed, with the reason) and answer 400 with its location."""
    reason = f"{error.location}: {error.message}" if error.location else error.message
    # Its own dedupe key: a refusal must never stand in for an acceptable request's message.
    key = f"refused sha256:{body.sha256} {error.location or ''}"[:200]
    receipt = await _receive(hub, client, body, dedupe_key=key, params="",
                             status=inbox.STATUS_FAILED, reason=reason)
    raise ApiError(400, f"{error.message} (kept as message {receipt.message_id})",
                   expression=[error.location] if error.location else None)


async def store(
    hub: Hub, client: Client, body: Body, *, dedupe_key: str | None, params: str = "",
    status: str = inbox.STATUS_RECEIVED,
) -> inbox.Receipt:
    """Commit the raw body to the inbox (the acknowledge path's one write)."""
    receipt = await _receive(hub, client, body, dedupe_key=dedupe_key, params=params,
                             status=status, reason=None)
    if receipt.duplicate and receipt.status == inbox.STATUS_FAILED:
        raise ApiError(500, f"an earlier attempt of this request failed; see /messages/"
                            f"{receipt.message_id}", code="exception")
    return receipt


def wait_processed(
    hub: Hub, message_id: str, timeout: float = SYNC_WAIT_SECS
) -> dict[str, Any] | None:
    """Process ``message_id`` with the worker's own step, until it is no longer waiting.

    Returns the message's status and lineage, or None if it is still waiting at the deadline
    (the caller then answers 202; the worker finishes). Only this message is claimed, so a
    request never works off a backlog ahead of it; if a worker holds it (SKIP LOCKED on
    PostgreSQL), this loop waits for that commit.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = inbox.get(hub.engine, message_id)
        if found is None or found["status"] != inbox.STATUS_RECEIVED:
            return found
        if time.monotonic() >= deadline:
            return None
        try:
            done = hub.pipeline.run_batch(hub.engine, 1, only=[message_id])
        except SQLAlchemyError as exc:
            # The claimed batch rolled back; the message is durable and the worker retries.
            log.warning("inline processing of message %s deferred (%s)", message_id,
                        type(exc).__name__)
            return None
        if done == 0:
            time.sleep(0.01)


def accepted(base: str, receipt: inbox.Receipt, location: str | None) -> FhirResponse:
    """202: stored durably, processing continues (``Location`` = where the resource will be)."""
    outcome = operation_outcome(
        "informational", f"accepted as message {receipt.message_id}; processing continues",
        severity="information")
    headers = {"Content-Location": f"/messages/{receipt.message_id}",
               "X-Message-Id": receipt.message_id}
    if location is not None:
        headers["Location"] = location
    return FhirResponse(outcome, status_code=202, headers=headers)


def prefer_return(prefer: str | None) -> str:
    for token in (prefer or "").replace(";", ",").split(","):
        key, _, value = token.strip().partition("=")
        if key.lower() == "return" and value:
            return value.strip().strip('"')
    return "representation"


def written_response(
    base: str, found: q.Stored, created: bool, receipt: inbox.Receipt, prefer: str | None,
) -> FhirResponse:
    headers = version_headers(found.version_id, found.last_updated)
    headers["Location"] = f"{base}/{found.res_type}/{found.res_id}/_history/{found.version_id}"
    headers["X-Message-Id"] = receipt.message_id
    status = 201 if created else 200
    choice = prefer_return(prefer)
    if choice == "minimal":
        return FhirResponse(None, status_code=status, headers=headers)
    if choice == "OperationOutcome":
        outcome = operation_outcome("informational", "created" if created else "stored",
                                    severity="information")
        return FhirResponse(outcome, status_code=status, headers=headers)
    body = resources.with_meta(found.content, found.version_id, found.last_updated)
    return FhirResponse(body, status_code=status, headers=headers)


def was_created(found: q.Stored, receipt: inbox.Receipt) -> bool:
    """Whether this request's message created the resource (201) rather than found/updated it."""
    return (not receipt.duplicate and found.message_id == receipt.message_id
            and found.version_id == 1)


def locate(hub: Hub, entries: list[dict[str, Any]]) -> list[q.Stored | None]:
    """Each planned entry's resource as stored now (None for a refused entry).

    A created Patient/Device whose identifier the registry had already bound to another id is
    filed under that id by the pipeline's identity stage: the answer follows it there.
    """
    keys = [(e["type"], e["id"]) for e in entries if e["error"] is None]
    with hub.engine.connect() as conn:
        found = q.stored(conn, keys)
        located: list[q.Stored | None] = []
        for e in entries:
            row = None if e["error"] is not None else found.get((e["type"], e["id"]))
            if row is None and e["error"] is None and e["method"] == "POST" and \
                    e["type"] in ("Patient", "Device"):
                row = _registered(conn, e["type"], e["resource"])
            located.append(row)
    return located


def _registered(conn: Any, res_type: str, resource: dict[str, Any]) -> q.Stored | None:
    for ident in resource.get("identifier") or []:
        if ident.get("system") and ident.get("value"):
            bound = q.registered_id(conn, res_type, ident["system"], ident["value"])
            if bound is not None:
                return q.stored(conn, [(res_type, bound)]).get((res_type, bound))
    return None


async def settle(
    request: Request, hub: Hub, receipt: inbox.Receipt, entry: dict[str, Any],
    prefer: str | None,
) -> FhirResponse:
    """Wait for the message to be processed, then answer from the store (see module docstring)."""
    base = fhir_base(request)
    lineage = await run_in_threadpool(wait_processed, hub, receipt.message_id)
    if lineage is None:
        return accepted(base, receipt, f"{base}/{entry['type']}/{entry['id']}")
    [found] = await run_in_threadpool(locate, hub, [entry])
    if lineage["status"] != inbox.STATUS_PROCESSED or found is None:
        raise ApiError(500, f"processing failed; see /messages/{receipt.message_id}",
                       code="exception")
    return written_response(base, found, was_created(found, receipt), receipt, prefer)


def _one_resource(plan: Any, res_type: str) -> DataError | None:
    if plan["kind"] != "resource":
        return DataError("send Bundles to POST /fhir", location="Bundle.type")
    if plan["entries"][0]["type"] != res_type:
        return DataError("resource type does not match the request URL", location="resourceType")
    return None


def find_existing(hub: Hub, res_type: str, target: str, system: str,
                  value: str) -> q.Stored | None:
    """A conditional create's match: the identifier's deterministic id, or the registry's."""
    with hub.engine.connect() as conn:
        ids = [target]
        bound = q.registered_id(conn, res_type, system, value)
        if bound is not None and bound != target:
            ids.insert(0, bound)
        found = q.stored(conn, [(res_type, i) for i in ids])
    return next((found[(res_type, i)] for i in ids if (res_type, i) in found), None)


def record_match(hub: Hub, message_id: str, found: q.Stored) -> None:
    """Lineage of a conditional create that matched: the resource it resolved to."""
    with write_tx(hub.engine) as conn:
        inbox.finish(conn, message_id, inbox.STATUS_PROCESSED, error=None,
                     resource_refs=[f"{found.res_type}/{found.res_id}"])


@router.post("/{res_type}", response_class=FhirResponse, status_code=201)
async def create(
    res_type: str, request: Request, hub: HubDep, client: ClientDep,
    if_none_exist: Annotated[str | None, Header(alias="If-None-Exist")] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Create (id from the first identifier), or conditional create with If-None-Exist."""
    require_type(res_type)
    require_writer(client)
    connector = fhir_connector(hub)
    body = await read_body(request, hub, connector)
    criteria = None
    params, dedupe = "", idempotency_key
    if if_none_exist is not None:
        criteria = identifier_criteria(if_none_exist)
        if criteria is None:
            raise ApiError(400, "If-None-Exist supports only identifier=system|value",
                           code="not-supported", expression=["If-None-Exist"])
        target = identifier_id(res_type, *criteria)
        params, dedupe = f"; hub-id={target}", f"If-None-Exist {res_type}/{target}"
    plan, error = decode(connector, body, params)
    if error is None:
        error = _one_resource(plan, res_type)
    if error is not None:
        await refuse(hub, client, body, error)
    planned: dict[str, Any] = plan["entries"][0]
    res_id: str = planned["id"]
    if criteria is not None:
        existing = await run_in_threadpool(find_existing, hub, res_type, res_id, *criteria)
        if existing is not None:
            receipt = await store(hub, client, body, dedupe_key=dedupe, params=params,
                                  status=inbox.STATUS_PROCESSED)
            if not receipt.duplicate:
                await run_in_threadpool(record_match, hub, receipt.message_id, existing)
            return written_response(fhir_base(request), existing, False, receipt, prefer)
    receipt = await store(hub, client, body, dedupe_key=dedupe, params=params)
    return await settle(request, hub, receipt, planned, prefer)


@router.put("/{res_type}/{res_id}", response_class=FhirResponse)
async def update(
    res_type: str, res_id: str, request: Request, hub: HubDep, client: ClientDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Update, or create with the client's id (update-as-create); the same PUT twice is one
    version."""
    require_type(res_type)
    require_writer(client)
    if not ID_RE.match(res_id):
        raise ApiError(400, "not a valid FHIR id", expression=["id"])
    if if_match is not None:
        raise ApiError(400, "If-Match (versioned update) is not supported", code="not-supported",
                       expression=["If-Match"])
    connector = fhir_connector(hub)
    body = await read_body(request, hub, connector)
    params = f"; hub-update={res_id}"
    plan, error = decode(connector, body, params)
    if error is None:
        error = _one_resource(plan, res_type)
    if error is not None:
        await refuse(hub, client, body, error)

    def current_version() -> int:
        with hub.engine.connect() as conn:
            return q.versions(conn, [(res_type, res_id)]).get((res_type, res_id), 0)

    version = await run_in_threadpool(current_version)
    dedupe = idempotency_key or f"PUT {res_type}/{res_id} v{version} sha256:{body.sha256}"
    receipt = await store(hub, client, body, dedupe_key=dedupe, params=params)
    return await settle(request, hub, receipt, plan["entries"][0], prefer)
