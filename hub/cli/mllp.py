"""``hub mllp``: the HL7v2 MLLP listener alone; and the helper ``hub serve`` starts it with."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import typer

from hub.channels.mllp import MllpChannel, MllpThread, run_loop
from hub.errors import ConfigurationError
from hub.runtime import Hub
from hub.settings import Settings
from hub.store.db import upgrade

log = logging.getLogger("hub.mllp")


def start_beside_api(hub: Hub) -> MllpThread | None:
    """For ``hub serve``: the MLLP channel in a thread, unless HUB_MLLP_ENABLED=false.

    A port that cannot be bound stops a production hub (ConfigurationError); elsewhere it is
    logged and the HTTP API runs without MLLP, so a second development hub on one machine works.
    """
    if not hub.settings.mllp_enabled:
        return None
    runner = MllpThread(MllpChannel(hub))
    try:
        port = runner.start()
    except ConfigurationError as exc:
        if hub.settings.env == "production":
            raise
        log.error("%s; serving HTTP without MLLP (set HUB_MLLP_PORT or HUB_MLLP_ENABLED)",
                  exc.message)
        return None
    log.info("MLLP listener on %s:%d", hub.settings.mllp_host, port)
    return runner


def mllp(
    host: str | None = typer.Option(None, help="listen address (default HUB_MLLP_HOST)"),
    port: int | None = typer.Option(None, help="listen port (default HUB_MLLP_PORT, 2575)"),
    worker: bool = typer.Option(False, "--worker/--no-worker",
                                help="also process the inbox in this process"),
    migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="run hub db upgrade first"),
) -> None:
    """Run the HL7v2 MLLP listener (ACK after the durable write) until interrupted."""
    settings = Settings()
    if migrate:
        upgrade(settings.database_url)
    hub = Hub.build(settings)
    channel = MllpChannel(hub, host=host, port=port)
    stop_worker = threading.Event()
    thread = hub.start_worker_thread(stop_worker) if worker else None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await channel.start()
        log.info("MLLP listener on %s:%d", channel.host, channel.port)
        try:
            await stop.wait()
        finally:
            await channel.stop()

    run_loop(main())
    stop_worker.set()
    if thread is not None:
        thread.join(timeout=30)
    hub.engine.dispose()
