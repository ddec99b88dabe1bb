"""``POST /hl7v2``: one HL7v2 message over HTTP, answered with its ACK (MLLP's semantics).

The body is an ER7 message (content type ``x-application/hl7-v2+er7``, ``application/hl7-v2``
or ``text/plain``); the answer is the HL7 ACK as the body, after the message is durable
(``hub.channels.hl7_intake``: same door checks, same dedupe key and window, same stored ACK
replayed for a repeat). HTTP status 200 means "here is the HL7 answer" — read MSA-1 for AA / AE /
AR (or CA / CE / CR); the inbox message id is in the ``Location`` header. Needs an API key
allowed to post to the source ``hl7v2``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.api.ingest import media_type, read_capped
from hub.channels.hl7_intake import CONTENT_TYPE, SOURCE, examine, store_now

router = APIRouter(tags=["hl7v2"])


@router.post("/hl7v2", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}},
                              "description": "the HL7 ACK, sent once the message is durable"}})
async def post_hl7v2(request: Request, hub: HubDep, client: ClientDep) -> Response:
    """Accept one HL7v2 ER7 message; answer its ACK (AA/AE/AR or CA/CE/CR per MSH-15/16)."""
    if not client.may_post(SOURCE):
        raise ApiError(403, f"this API key may not post to source '{SOURCE}'")
    connector = hub.connectors.get(SOURCE)
    ctype = media_type(request.headers.get("content-type"))
    if ctype not in connector.content_types:
        allowed = ", ".join(sorted(connector.content_types))
        raise ApiError(415, f"content type '{ctype or 'none'}' not accepted (use {allowed})")
    body = await read_capped(request, hub.settings.max_body_bytes)
    door = examine(body, connector)
    with hub.telemetry.intake(SOURCE, "http") as carrier:
        stored = await run_in_threadpool(
            store_now, hub.engine, door, body, channel="http", client=client.name,
            traceparent=carrier.get("traceparent"), window=hub.settings.hl7_dedupe_window_secs)
    hub.telemetry.count_outcome(SOURCE, "duplicate" if stored.duplicate else "received")
    headers = {"Location": f"/messages/{stored.message_id}"}
    if stored.duplicate:
        headers["Idempotent-Replayed"] = "true"
    return Response(stored.reply, media_type=CONTENT_TYPE, headers=headers)
