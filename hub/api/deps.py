"""Request dependencies: the hub, and the authenticated client (API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from hub.api.errors import ApiError
from hub.api.ratelimit import RateLimits
from hub.runtime import Hub
from hub.store import api_keys
from hub.store.api_keys import Client

_bearer = HTTPBearer(auto_error=False, description="API key as a Bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


async def get_client(
    request: Request,
    hub: HubDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> Client:
    """401 unless the request carries a valid, unrevoked API key; 429 when that key is over its
    rate limit (hub.api.ratelimit). Both before the route reads the body."""
    key = bearer.credentials if bearer is not None else header_key
    if not key:
        raise ApiError(401, "API key required (Authorization: Bearer <key> or X-API-Key)",
                       headers={"WWW-Authenticate": "Bearer"})
    client = await run_in_threadpool(_authenticate, hub, request.app.state.rate_limits, key)
    if client is None:
        raise ApiError(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return client


def _authenticate(hub: Hub, limits: RateLimits, key: str) -> Client | None:
    # One trip to the thread pool for both: each costs a database or Redis round trip.
    client = api_keys.authenticate(hub.engine, hub.settings.secret_key.get_secret_value(), key)
    if client is not None:
        limits.check(client)
    return client


ClientDep = Annotated[Client, Depends(get_client)]
