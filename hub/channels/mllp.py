"""The HL7v2 MLLP channel: an MLLP listener whose every message is stored before its ACK.

``MllpChannel.on_message`` is the listener's handler: ``examine`` at the door (no I/O), then the
group-commit :class:`~hub.channels.hl7_intake.InboxWriter`, and only after the commit the ACK
bytes go back. If the write fails the handler raises, and the listener closes the connection
without an ACK, so the sender resends (nothing is acknowledged that is not durable).

The listener itself is the ``connectors.mllp`` transport, found by entry point (group
``hub.transports``, name ``mllp``): the hub core never imports a connector. ``hub serve`` runs
the channel in a thread with its own event loop beside the HTTP API; ``hub mllp`` runs it alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from hub.channels.hl7_intake import SOURCE, InboxWriter, examine
from hub.errors import ConfigurationError
from hub.runtime import Hub

log = logging.getLogger("hub.channels.mllp")
TRANSPORTS = "hub.transports"


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the MLLP channel's event loop: uvloop's where installed (a dependency on Linux and
    macOS), else asyncio's. A synchronous sender waits for every ACK, so the loop's own cost
    per frame (read, timers, write, the writer thread's wake-up) is paid per message. Measured
    back to back, ``bench.hl7_mllp --topology phases`` (12,000 ORUs, 8 senders, load 1.1-1.2):
    listener CPU 562 vs 611 us a message, ACKs 1,409 vs 1,304 a second (uvloop vs asyncio)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(main)
        return
    uvloop.run(main)


def listener_class() -> Any:
    """The MLLP listener class registered under ``hub.transports`` / ``mllp``."""
    for ep in entry_points(group=TRANSPORTS, name="mllp"):
        return ep.load()
    raise ConfigurationError("no MLLP transport installed (entry point hub.transports: mllp); "
                             "reinstall the hub: pip install -e .")


@dataclass
class MllpChannel:
    """One MLLP listener feeding the inbox. ``port=0`` binds a free port (see ``port``)."""

    hub: Hub
    host: str | None = None
    port: int | None = None
    writer: InboxWriter | None = None
    _listener: Any = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        settings = self.hub.settings
        self.host = self.host if self.host is not None else settings.mllp_host
        self.port = self.port if self.port is not None else settings.mllp_port
        if self.writer is None:
            self.writer = InboxWriter(self.hub.engine, settings.hl7_dedupe_window_secs)
        self.connector = self.hub.connectors.get(SOURCE)

    async def on_message(self, payload: bytes) -> bytes:
        """Store ``payload`` durably, then return the ACK to send (b"": none asked for)."""
        door = examine(payload, self.connector)
        telemetry = self.hub.telemetry
        with telemetry.intake(SOURCE, "mllp") as carrier:
            assert self.writer is not None
            stored = await self.writer.store(door, payload, channel="mllp", client=None,
                                             traceparent=carrier.get("traceparent"))
        telemetry.count_outcome(SOURCE, "duplicate" if stored.duplicate else "received")
        return stored.reply

    async def start(self) -> None:
        settings = self.hub.settings
        assert self.writer is not None
        self.writer.start()
        klass = listener_class()
        self._listener = klass(self.host, self.port, on_message=self.on_message,
                               max_frame_bytes=settings.mllp_max_frame_bytes,
                               idle_timeout_secs=settings.mllp_idle_timeout_secs,
                               max_connections=settings.mllp_max_connections)
        await self._listener.start()
        self.port = int(self._listener.port)
        self.hub.channel_states["mllp"] = self.state
        self._ready.set()

    def state(self) -> dict[str, Any]:
        """For ``/ready``: listening (and on which port) or stopped."""
        return {"state": "listening" if self._listener is not None else "stopped",
                "port": self.port}

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (then let in-flight messages finish and close)."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


class MllpThread:
    """The channel in a background thread with its own event loop (``hub serve``)."""

    def __init__(self, channel: MllpChannel) -> None:
        self.channel = channel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hub-mllp", daemon=True)

    def start(self, timeout: float = 10.0) -> int:
        """Start and wait until listening; returns the bound port. Raises if binding failed."""
        self._thread.start()
        if not self.channel._ready.wait(timeout) or self._failed is not None:
            what = type(self._failed).__name__ if self._failed is not None else "timeout"
            raise ConfigurationError(f"MLLP listener on {self.channel.host}:{self.channel.port} "
                                     f"did not start ({what})")
        return int(self.channel.port or 0)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.channel.serve(self._stop)

        try:
            run_loop(main())
        except BaseException as exc:  # surfaced by start(); logged without content
            self._failed = exc
            self.channel._ready.set()
            log.error("MLLP channel stopped: %s", type(exc).__name__)
