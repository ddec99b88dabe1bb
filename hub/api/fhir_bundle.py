"""``POST /fhir``: batch and transaction Bundles of POST/PUT entries (what a FHIR sync sends).

Same durable path as single writes (``hub.api.fhir_write``): validate, commit the raw Bundle to
the inbox, drain it through the pipeline, answer from the store.

* transaction: all or nothing. Any bad entry → 400 OperationOutcome naming it
  (``entry[2].resource.status``); the body is kept as failed and no resource is written. The
  pipeline writes all entries in one savepoint, so a failure there stores nothing either.
  References to another entry's ``fullUrl`` are rewritten to the id it gets.
* batch: each entry stands alone. A bad entry gets its own ``400`` with an OperationOutcome in
  ``response.outcome``; the others are written and answered ``201``/``200``.

Entry ids are deterministic (see ``connectors.fhir_resource``): PUT ``Type/id`` keeps the id,
POST derives it from ``ifNoneExist: identifier=system|value`` or the first identifier. An
``ifNoneExist`` entry is a conditional create, as R4 has it: the pipeline decides under the write
lock whether its match (that id, or the id the registry binds the identifier to) is stored, and
if so writes nothing for it and answers 200 with the match. A repeat of the same Bundle against
unchanged resources is deduplicated by the inbox (its key holds the body hash and the targets'
versions); against changed ones it is applied again, as the entries' PUT semantics require.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.api.fhir_read import FhirResponse, fhir_base
from hub.api.fhir_write import (
    accepted,
    decode,
    fhir_connector,
    locate,
    prefer_return,
    read_body,
    refuse,
    require_writer,
    store,
    wait_processed,
    was_created,
)
from hub.errors import DataError
from hub.fhir.outcome import operation_outcome
from hub.runtime import Hub
from hub.store import inbox, resources
from hub.store import search as q
from hub.store.db import as_utc

router = APIRouter(prefix="/fhir", tags=["fhir"])

_DONE = (inbox.STATUS_PROCESSED, inbox.STATUS_PARTIAL)


def _state_key(hub: Hub, kind: str, sha256: str, keys: list[tuple[str, str]]) -> str:
    """Dedupe key: same Bundle against the same versions of its targets ⇒ same outcome."""
    with hub.engine.connect() as conn:
        current = q.versions(conn, keys)
    state = ",".join(f"{t}/{i}@{current.get((t, i), 0)}" for t, i in sorted(set(keys)))
    return f"{kind} sha256:{sha256} state:{hashlib.sha256(state.encode()).hexdigest()}"


def _entry_error(error: dict[str, Any]) -> dict[str, Any]:
    status = "400 Bad Request"
    outcome = operation_outcome(error["code"], error["message"],
                                expression=[error["location"]] if error["location"] else None)
    return {"response": {"status": status, "outcome": outcome}}


def _entry_written(found: q.Stored, created: bool, representation: bool) -> dict[str, Any]:
    last = as_utc(found.last_updated) or found.last_updated
    entry: dict[str, Any] = {"response": {
        "status": "201 Created" if created else "200 OK",
        "location": f"{found.res_type}/{found.res_id}/_history/{found.version_id}",
        "etag": f'W/"{found.version_id}"',
        "lastModified": last.isoformat(),
    }}
    if representation:
        entry["resource"] = resources.with_meta(found.content, found.version_id,
                                                found.last_updated)
    return entry


@router.post("", response_class=FhirResponse)
async def batch_or_transaction(
    request: Request, hub: HubDep, client: ClientDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """A ``batch`` or ``transaction`` Bundle; answers a ``batch-response``/``transaction-response``
    with one entry per request entry, in order."""
    require_writer(client)
    connector = fhir_connector(hub)
    body = await read_body(request, hub, connector)
    plan, error = decode(connector, body)
    if error is None and plan["kind"] == "resource":
        error = DataError("POST /fhir takes a batch or transaction Bundle",
                          location="resourceType")
    if error is not None:
        await refuse(hub, client, body, error)
    kind: str = plan["kind"]
    entries: list[dict[str, Any]] = plan["entries"]
    keys = [(e["type"], e["id"]) for e in entries if e["error"] is None]
    dedupe = idempotency_key or await run_in_threadpool(_state_key, hub, kind, body.sha256, keys)
    receipt = await store(hub, client, body, dedupe_key=dedupe)
    lineage = await run_in_threadpool(wait_processed, hub, receipt.message_id)
    if lineage is None:
        return accepted(fhir_base(request), receipt, None)
    located = await run_in_threadpool(locate, hub, entries)
    if lineage["status"] not in _DONE and (kind == "transaction" or keys):
        raise ApiError(500, f"processing failed; see /messages/{receipt.message_id}",
                       code="exception")
    representation = prefer_return(prefer) == "representation" and prefer is not None
    answers = []
    for e, row in zip(entries, located, strict=True):
        if e["error"] is not None:
            answers.append(_entry_error(e["error"]))
            continue
        if row is None:  # processed, yet absent: never expected; say so rather than guess
            answers.append(_entry_error({"code": "exception", "location": None,
                                         "message": "entry was not stored"}))
            continue
        answers.append(_entry_written(row, was_created(row, receipt), representation))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": f"{kind}-response"}
    if answers:  # FHIR JSON has no empty arrays
        bundle["entry"] = answers
    return FhirResponse(bundle, headers={"X-Message-Id": receipt.message_id})
