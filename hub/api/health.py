"""Liveness and readiness (no API key: load balancers call these).

``/ready`` answers 503 only when the database does not: without it nothing can be acknowledged.
A channel that is down (MQTT broker away) does not make the hub unready, since HTTP intake still
works and a load balancer must keep sending it; the body says ``degraded`` and names the
channel's state for monitoring. The body carries states only: no counts, hosts or topics.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from hub.api.deps import HubDep
from hub.api.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(hub: HubDep) -> dict[str, Any]:
    """The database answers and the mappings are loaded; each running channel's state."""

    def ping() -> None:
        with hub.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception:
        raise ApiError(503, "database unavailable", code="transient") from None
    channels = {name: probe() for name, probe in sorted(hub.channel_states.items())}
    up = all(c["state"] in _UP for c in channels.values())
    return {"status": "ready" if up else "degraded",
            "mappings": hub.mappings().fingerprint[:12], "channels": channels}


_UP = frozenset({"listening", "connected"})
