"""``POST /ingest/{source}``: durable intake of one vendor payload, answered 202 once stored."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.contracts import Connector
from hub.errors import DataError, UnknownSourceError
from hub.store import inbox

router = APIRouter(tags=["ingest"])


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` (before parsing)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def accepted(receipt: inbox.Receipt) -> JSONResponse:
    body = {"messageId": receipt.message_id, "status": receipt.status,
            "links": {"self": f"/messages/{receipt.message_id}"}}
    headers = {"Location": f"/messages/{receipt.message_id}"}
    if receipt.duplicate:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202, headers=headers)


async def intake(
    request: Request, hub: HubDep, client_name: str, source: str, connector: Connector,
    channel: str, idempotency_key: str | None,
) -> tuple[inbox.Receipt, Any]:
    """Shared by every HTTP intake: size cap, content type, cheap decode, durable store.

    A body that does not decode is kept (status failed, with the reason) and answered 400.
    Returns the receipt and the decoded document (None for a repeat).
    """
    ctype = media_type(request.headers.get("content-type"))
    if ctype not in connector.content_types:
        allowed = ", ".join(sorted(connector.content_types))
        raise ApiError(415, f"content type '{ctype or 'none'}' not accepted for source "
                            f"'{source}' (use {allowed})")
    body = await read_capped(request, hub.settings.max_body_bytes)
    try:
        document = connector.decode(body, ctype)
        error = None
    except DataError as exc:
        document, error = None, exc
    key = idempotency_key
    if key is None and document is not None:
        key = connector.event_id(document)
    with hub.telemetry.intake(source, channel) as carrier:
        receipt = await run_in_threadpool(
            inbox.receive, hub.engine, source=source, channel=channel, content_type=ctype,
            body=body, dedupe_key=key, client=client_name,
            status=inbox.STATUS_FAILED if error else inbox.STATUS_RECEIVED,
            error=(f"{error.location}: {error.message}" if error and error.location
                   else (error.message if error else None)),
            traceparent=carrier.get("traceparent"),
        )
    hub.telemetry.count_outcome(source, "received")
    if error is not None or (receipt.status == inbox.STATUS_FAILED and receipt.duplicate):
        message = error.message if error else "this body was refused before"
        raise ApiError(400, f"{message} (kept as message {receipt.message_id})",
                       expression=[error.location] if error and error.location else None)
    return receipt, document


@router.post("/ingest/{source}", status_code=202,
             responses={202: {"description": "stored durably; processing follows"}})
async def ingest(
    source: str,
    request: Request,
    hub: HubDep,
    client: ClientDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Accept one payload in the source's format; 202 with a message id once it is durable."""
    try:
        connector = hub.connectors.get(source)
    except UnknownSourceError as exc:
        raise ApiError(404, exc.message) from None
    if not client.may_post(source):
        raise ApiError(403, f"this API key may not post to source '{source}'")
    receipt, _ = await intake(request, hub, client.name, source, connector, "http",
                              idempotency_key)
    return accepted(receipt)
