"""The FastAPI application factory; ``hub serve`` runs it under uvicorn."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hub import __version__
from hub.api import errors, fhir_bundle, fhir_read, fhir_write, health, ingest, messages, sync
from hub.api import hl7v2 as hl7v2_api
from hub.api import registry as registry_api
from hub.api import rules as rules_api
from hub.api.ratelimit import RateLimits
from hub.runtime import Hub


def create_app(hub: Hub, *, inline_worker: bool | None = None) -> FastAPI:
    """The API over ``hub``; with ``inline_worker`` the process also drains the inbox."""
    run_inline = hub.settings.inline_worker if inline_worker is None else inline_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = hub.start_worker_thread(stop) if run_inline else None
        sync.start_in_thread(hub, stop, enabled=run_inline)  # outbox → destinations, if any
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=30)

    # Interactive docs help newcomers; in production every endpoint but /health and /ready needs
    # a key, and a browser cannot send one to /docs, so the docs are off there.
    docs = hub.settings.env != "production"
    app = FastAPI(
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        title="IoMT → FHIR hub",
        version=__version__,
        description="Device payloads and HL7v2 feeds in; FHIR R4 out. Every endpoint but "
        "/health and /ready needs an API key (`hub keys create`).",
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.rate_limits = RateLimits(hub.settings.rate_limit, hub.settings.rate_limit_storage)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(hl7v2_api.router)
    app.include_router(messages.router)
    app.include_router(fhir_read.router)
    app.include_router(fhir_write.router)
    app.include_router(fhir_bundle.router)
    app.include_router(sync.router)
    app.include_router(rules_api.router)
    app.include_router(registry_api.router)
    return app
