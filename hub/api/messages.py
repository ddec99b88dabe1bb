"""``GET /messages/{id}``: a message's status and lineage."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.store import delivery, inbox
from hub.sync.replies import ACK_TYPE, HL7V2_SOURCE

router = APIRouter(tags=["messages"])


@router.get("/messages/{message_id}")
async def get_message(message_id: str, hub: HubDep, client: ClientDep) -> dict[str, Any]:
    """Status (received, processed, partial, failed, quarantined), reason, resources produced,
    and per resource its delivery status at each destination."""
    found = await run_in_threadpool(inbox.get, hub.engine, message_id)
    if found is None or not client.may_post(found["source"]):
        raise ApiError(404, f"no message {message_id}")
    # Delivery status per resource per destination (the sync lineage); for HL7v2, also of the
    # deferred application ACK owed to the sender (hub.sync.replies), under hl7v2-ack/{id}.
    refs = found["resources"] + ([f"{ACK_TYPE}/{message_id}"]
                                 if found["source"] == HL7V2_SOURCE else [])
    found["delivery"] = await run_in_threadpool(delivery.lineage, hub.engine, refs)
    return found
