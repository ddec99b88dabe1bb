"""A small asyncio MLLP client: send framed messages, wait for each ACK.

Used by tests and benchmarks, and the base for HL7v2-out. MLLP is synchronous: ``send`` writes
one frame and waits for the next frame from the peer, which is taken as its ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from types import TracebackType

from hub.hl7v2 import DEFAULT_MAX_FRAME_BYTES, Frame, MllpDecoder, frame


class MllpClientError(ConnectionError):
    """The peer closed, timed out, or answered with something that is not an MLLP frame."""


class MllpClient:
    """One MLLP connection. Use as ``async with MllpClient(host, port) as c: await c.send(m)``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_secs: float = 30.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_secs = timeout_secs
        self._decoder = MllpDecoder(max_frame_bytes)
        self._frames: deque[bytes] = deque()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        async with asyncio.timeout(self.timeout_secs):
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, payload: bytes) -> bytes:
        """Send one message and return the payload of the peer's next frame (its ACK)."""
        await self.write_raw(frame(payload))
        return await self.receive()

    async def write_raw(self, data: bytes) -> None:
        """Write bytes as they are (no framing): for tests of what a listener tolerates."""
        if self._writer is None:
            raise MllpClientError("not connected")
        self._writer.write(data)
        async with asyncio.timeout(self.timeout_secs):
            await self._writer.drain()

    async def receive(self) -> bytes:
        """The payload of the next frame from the peer. Framing errors in between are skipped.

        Raises :class:`MllpClientError` if the peer closes or ``timeout_secs`` passes first.
        """
        if self._reader is None:
            raise MllpClientError("not connected")
        try:
            async with asyncio.timeout(self.timeout_secs):
                while not self._frames:
                    data = await self._reader.read(64 * 1024)
                    if not data:
                        raise MllpClientError("connection closed before a frame arrived")
                    for item in self._decoder.feed(data):
                        if isinstance(item, Frame):
                            self._frames.append(item.payload)
        except TimeoutError:
            raise MllpClientError(f"no frame within {self.timeout_secs}s") from None
        return self._frames.popleft()


async def send_messages(
    host: str, port: int, payloads: Iterable[bytes], *, timeout_secs: float = 30.0
) -> list[bytes]:
    """Send ``payloads`` in order over one connection; return their ACK payloads in order."""
    acks: list[bytes] = []
    async with MllpClient(host, port, timeout_secs=timeout_secs) as client:
        for payload in payloads:
            acks.append(await client.send(payload))
    return acks
