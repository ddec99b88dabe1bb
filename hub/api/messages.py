"""``GET /messages/{id}``: a message's status and lineage."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.store import delivery, inbox

router = APIRouter(tags=["messages"])


@router.get("/messages/{message_id}")
async def get_message(message_id: str, hub: HubDep, client: ClientDep) -> dict[str, Any]:
    """Status (received, processed, partial, failed, quarantined), reason, resources produced,
    and per resource its delivery status at each destination."""
    found = await run_in_threadpool(inbox.get, hub.engine, message_id)
    if found is None or not client.may_post(found["source"]):
        raise ApiError(404, f"no message {message_id}")
    # Delivery status per resource per destination (the sync lineage).
    found["delivery"] = await run_in_threadpool(delivery.lineage, hub.engine, found["resources"])
    return found
