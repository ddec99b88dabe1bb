"""Liveness and readiness (no API key: load balancers call these)."""

from __future__ import annotations

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
async def ready(hub: HubDep) -> dict[str, str]:
    """The database answers and the mappings are loaded."""

    def ping() -> None:
        with hub.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception:
        raise ApiError(503, "database unavailable", code="transient") from None
    return {"status": "ready", "mappings": hub.mappings().fingerprint[:12]}
