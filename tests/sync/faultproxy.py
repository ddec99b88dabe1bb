"""A loopback TCP proxy that breaks connections between the hub and a destination.

* ``reset_before``: share of requests whose connection is reset (RST) before the request reaches
  the server — nothing applied, the client sees a reset.
* ``reset_after``: share of 2xx responses dropped with a reset after the server answered — the
  write was applied but the hub never hears of it (the re-send must not duplicate).
* ``down``: while True every new connection is reset at once (an outage).

Decisions are per request/response start (a chunk beginning with an HTTP method or status
line), at exact rates: with ``reset_before=0.03`` every 33rd request is reset (the 2nd, the
35th, ...), so every run that makes a few dozen requests meets each fault, whatever the timing.
(Drawn at random, a run of 90 responses missed a 3 % fault about one time in sixteen.) Runs its
own asyncio loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter

METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ")


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _due(proxy: FaultProxy, counter: str, share: float, offset: int) -> bool:
    """Count one more start in ``counter``; True for every ``1/share``-th (``offset`` first)."""
    n = getattr(proxy, counter) + 1
    setattr(proxy, counter, n)
    return bool(share) and n % round(1 / share) == offset


class FaultProxy:
    def __init__(self, upstream_port: int, *, reset_before: float = 0.0,
                 reset_after: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.reset_before = reset_before
        self.reset_after = reset_after
        self._down = False
        self._open: set[asyncio.StreamWriter] = set()
        self.counts: Counter[str] = Counter()
        self._requests = 0  # request and 2xx response starts seen (on the proxy's one loop)
        self._responses = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        """Going down also cuts the connections already open (keep-alive ones included)."""
        self._down = value
        if value:
            def cut() -> None:
                for writer in list(self._open):
                    self.counts["cut"] += 1
                    _rst(writer)
            self._loop.call_soon_threadsafe(cut)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            self.counts["refused"] += 1
            _rst(writer)
            return
        self._open.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _rst(writer)
            return

        async def to_server() -> None:
            while data := await reader.read(65536):
                if data.startswith(METHODS) and _due(self, "_requests", self.reset_before, 2):
                    self.counts["reset_before"] += 1
                    _rst(writer)
                    up_writer.transport.abort()
                    return
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if data.startswith(b"HTTP/1.1 2") and _due(self, "_responses", self.reset_after, 5):
                    self.counts["reset_after"] += 1
                    _rst(writer)
                    up_writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
            await asyncio.gather(to_server(), to_client())
        self._open.discard(writer)
        writer.transport.abort()
        up_writer.transport.abort()
