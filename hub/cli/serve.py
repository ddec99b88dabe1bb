"""``hub serve`` (API + inline worker) and ``hub worker`` (inbox processing only)."""

from __future__ import annotations

import logging
import signal
import threading
from functools import partial
from pathlib import Path

import typer
import uvicorn

from hub.api.app import create_app
from hub.cli.mllp import start_beside_api
from hub.cli.mqtt import start_beside_api as start_mqtt_beside_api
from hub.prepare_pool import PreparePool
from hub.runtime import Hub, preparer
from hub.settings import Settings
from hub.store.db import upgrade
from hub.worker import run_worker, tune_gc

log = logging.getLogger("hub.serve")


def serve(
    host: str | None = typer.Option(None, help="listen address (default HUB_HOST)"),
    port: int | None = typer.Option(None, help="listen port (default HUB_PORT)"),
    worker: bool = typer.Option(True, "--worker/--no-worker",
                                help="also process the inbox in this process"),
    demo: bool = typer.Option(False, help="development only: create a demo key and post the "
                                          "sample readings in fixtures/demo through the API"),
    migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="run hub db upgrade first"),
    mllp: bool = typer.Option(True, "--mllp/--no-mllp",
                              help="also listen for HL7v2 over MLLP (HUB_MLLP_ENABLED)"),
    mqtt: bool = typer.Option(True, "--mqtt/--no-mqtt",
                              help="also subscribe to MQTT when configured (HUB_MQTT_FILE)"),
) -> None:
    """Run the HTTP API (and, by default, a worker draining the inbox and the MLLP listener)."""
    settings = Settings()
    if migrate:
        upgrade(settings.database_url)
    hub = Hub.build(settings)
    app = create_app(hub, inline_worker=worker)
    listen_host, listen_port = host or settings.host, port or settings.port
    if demo:
        from hub.cli.demo import start_demo

        start_demo(hub, f"http://{listen_host}:{listen_port}", Path("fixtures/demo"))
    mllp_thread = start_beside_api(hub) if mllp else None  # HL7v2 over MLLP (HUB_MLLP_*)
    mqtt_channel = start_mqtt_beside_api(hub) if mqtt else None  # HUB_MQTT_FILE / ./mqtt.yaml
    # The start-up heap (models, mappings, the app) out of the cyclic GC's scans, and rarer
    # young collections, as in ``hub worker`` (hub.worker.tune_gc; the inline worker's thread
    # calls it too, once per process): a POST's request objects outlive young collections.
    tune_gc()
    try:
        uvicorn.run(app, host=listen_host, port=listen_port, log_level="info", access_log=False)
    finally:
        if mllp_thread is not None:
            mllp_thread.stop()
        if mqtt_channel is not None:
            mqtt_channel.stop()


def worker(
    batch: int | None = typer.Option(None, help="messages per transaction"),
    prepare_procs: int | None = typer.Option(
        None, min=0, help="processes preparing messages for this one to commit (default "
                          "HUB_WORKER_PREPARE_PROCS; 0: none)"),
) -> None:
    """Process the inbox until interrupted; run several on one PostgreSQL to share the work."""
    settings = Settings()
    hub = Hub.build(settings)
    procs = settings.worker_prepare_procs if prepare_procs is None else prepare_procs
    pool = PreparePool(hub.pipeline, hub.engine, procs, partial(preparer, settings),
                       rows_per_commit=settings.worker_commit_rows) if procs else None
    if pool is not None:
        pool.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("worker started")
    try:
        run_worker(hub.pipeline, hub.engine, stop, batch=batch or settings.worker_batch,
                   poll_secs=settings.worker_poll_secs, mappings=hub.mappings, pool=pool)
    finally:
        if pool is not None:
            pool.close()
    log.info("worker stopped")
