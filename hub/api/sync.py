"""Sync over the API: dead letters, replay, outbox status, and the hub's public JWKS.

``GET /.well-known/jwks.json`` is public (EHRs fetch it to verify the hub's SMART client
assertions). Everything under ``/sync`` needs an administrator key (``--source '*'``): dead
letters carry destinations' answers, which may quote resource content.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.runtime import Hub
from hub.store import delivery
from hub.store.api_keys import Client
from hub.sync import keys as signing_keys
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker

log = logging.getLogger("hub.api.sync")
router = APIRouter(tags=["sync"])


def require_admin(client: ClientDep) -> Client:
    if "*" not in client.sources:
        raise ApiError(403, "an administrator key (sources '*') is required")
    return client


Admin = Depends(require_admin)


@router.get("/.well-known/jwks.json")
async def jwks(hub: HubDep) -> dict[str, Any]:
    """The public keys of the hub's SMART Backend Services signing keys (no auth)."""
    return await run_in_threadpool(signing_keys.jwks, hub.sync_settings.keys_dir)


@router.get("/sync/status", dependencies=[Admin])
async def status(hub: HubDep) -> dict[str, Any]:
    """Outbox rows per destination and status."""
    counts = await run_in_threadpool(delivery.counts, hub.engine)
    return {"destinations": counts}


@router.get("/sync/dead-letters", dependencies=[Admin])
async def list_dead(hub: HubDep, destination: str | None = None, kind: str | None = None,
                    limit: int = 100, replayed: bool = False) -> dict[str, Any]:
    """Open dead letters (``replayed=true`` includes replayed ones), newest first."""
    rows = await run_in_threadpool(lambda: delivery.list_dead(
        hub.engine, destination=destination, kind=kind, limit=min(limit, 1000),
        include_replayed=replayed))
    return {"deadLetters": rows}


@router.get("/sync/dead-letters/{dead_id}", dependencies=[Admin])
async def show_dead(hub: HubDep, dead_id: int) -> dict[str, Any]:
    found = await run_in_threadpool(delivery.get_dead, hub.engine, dead_id)
    if found is None:
        raise ApiError(404, f"no dead letter {dead_id}")
    return found


class ReplayDead(BaseModel):
    ids: list[int] | None = Field(None, description="dead letter ids")
    destination: str | None = Field(None, description="every open one of this destination")


@router.post("/sync/dead-letters/replay", dependencies=[Admin])
async def replay_dead(hub: HubDep, body: ReplayDead) -> dict[str, int]:
    if not body.ids and not body.destination:
        raise ApiError(400, "give ids or destination")
    count = await run_in_threadpool(lambda: delivery.replay_dead(
        hub.engine, body.ids or None, destination=body.destination))
    return {"replayed": count}


class Replay(BaseModel):
    destination: str
    since: datetime = Field(description="resources changed at or after this instant")


@router.post("/sync/replay", dependencies=[Admin])
async def replay(hub: HubDep, body: Replay) -> dict[str, int]:
    """Queue every resource changed since ``since`` for ``destination`` (backfill)."""
    route = OutboxRouter.from_config(hub.destinations).get(body.destination)
    if route is None:
        raise ApiError(404, f"no enabled destination {body.destination}")
    since = body.since if body.since.tzinfo else body.since.replace(tzinfo=UTC)
    queued = await run_in_threadpool(lambda: delivery.enqueue_since(
        hub.engine, body.destination, since, resource_types=route.resource_types,
        wants=route.wants_content))
    return {"queued": queued}


def start_in_thread(hub: Hub, stop: threading.Event, *, enabled: bool = True
                    ) -> threading.Thread | None:
    """``hub serve``'s sync worker: lanes for every enabled destination until ``stop``."""
    if not (enabled and hub.sync_settings.sync_inline and hub.destinations.enabled):
        return None
    worker = SyncWorker(hub.engine, hub.destinations,
                        lease_secs=hub.sync_settings.sync_lease_secs,
                        poll_secs=hub.sync_settings.sync_poll_secs, telemetry=hub.telemetry)
    thread = threading.Thread(target=worker.run, args=(stop,), name="hub-sync", daemon=True)
    thread.start()
    return thread
