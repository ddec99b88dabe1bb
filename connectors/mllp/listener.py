"""An asyncio MLLP (HL7v2 over TCP) listener.

Contract with the hub: ``on_message(payload) -> ack`` receives the bytes of one MLLP frame and
returns the ACK payload (unframed) to send back; the hub makes the message durable *before* it
returns. The listener therefore:

- processes the frames of one connection strictly in order, one at a time (MLLP is a
  synchronous protocol; reading pauses while a message is handled, which is back-pressure);
- sends nothing if ``on_message`` returns ``b""`` (e.g. the sender asked for no ACK);
- closes the connection *without* an ACK if ``on_message`` raises, so the sender resends
  rather than believing an unstored message was accepted (as Google's MLLP adapter does);
- answers an oversize frame, or one cut short by the next start block, with an AR (CR in
  enhanced mode) built from the frame's first bytes; skips garbage between frames;
- closes connections idle for ``idle_timeout_secs`` and refuses (accept-then-close)
  connections beyond ``max_connections``;
- survives any input: no byte sequence ends the listener, only its own connection at worst.

Only ``hub.hl7v2`` and the standard library are imported: connectors never touch the store.
Logs name the peer, sizes and error kinds, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from hub.hl7v2 import (
    DEFAULT_MAX_FRAME_BYTES,
    AckError,
    ErrorCode,
    Frame,
    FramingError,
    FramingErrorKind,
    MllpDecoder,
    build_reject_ack,
    frame,
)

MessageHandler = Callable[[bytes], Awaitable[bytes]]
log = logging.getLogger(__name__)


@dataclass
class ListenerStats:
    """Counters for tests and metrics (monotonic since start)."""

    connections_accepted: int = 0
    connections_refused: int = 0
    frames: int = 0
    acks_sent: int = 0
    framing_errors: dict[str, int] = field(default_factory=dict)
    handler_failures: int = 0
    idle_closed: int = 0


@dataclass(eq=False)
class _Connection:
    task: asyncio.Task[None]
    peer: str
    busy: bool = False  # inside on_message or writing its ACK: let it finish on stop()


class MllpListener:
    """Listen for MLLP connections on ``host:port`` (``port=0``: any free port, see ``port``)."""

    def __init__(
        self,
        host: str,
        port: int = 2575,
        *,
        on_message: MessageHandler,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        idle_timeout_secs: float = 600.0,
        max_connections: int = 256,
        shutdown_grace_secs: float = 10.0,
        read_chunk_bytes: int = 64 * 1024,
    ) -> None:
        # 600 s idle: below the 10-minute idle reset of many cloud NATs/firewalls (Google's MLLP
        # adapter notes Cloud VPC's), so we close first and cleanly; senders reconnect.
        if max_connections < 1 or idle_timeout_secs <= 0 or read_chunk_bytes < 1:
            raise ValueError("max_connections, idle_timeout_secs and read_chunk_bytes must be > 0")
        self.host = host
        self._requested_port = port
        self._on_message = on_message
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout_secs = idle_timeout_secs
        self.max_connections = max_connections
        self.shutdown_grace_secs = shutdown_grace_secs
        self._chunk = read_chunk_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self.stats = ListenerStats()

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``). Only valid once started."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("listener is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        """Bind and start accepting. Raises ``OSError`` if the address is unavailable."""
        if self._server is not None:
            raise RuntimeError("listener already started")
        self._stopping = False
        self._server = await asyncio.start_server(
            self._accept, self.host, self._requested_port, reuse_address=True
        )
        log.info("MLLP listener on %s:%d", self.host, self.port)

    async def serve_forever(self) -> None:
        """Start if needed, then run until cancelled (stopping cleanly on the way out)."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop accepting, let in-flight messages finish (up to the grace period), close all.

        A connection waiting for input is closed at once; one inside ``on_message`` gets
        ``shutdown_grace_secs`` to finish and send its ACK, then is cancelled. Frames already
        read but not yet handled get no ACK, so their senders resend them.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        for conn in list(self._connections):
            if not conn.busy:
                conn.task.cancel()
        tasks = [c.task for c in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace_secs)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await server.wait_closed()
        log.info("MLLP listener stopped")

    async def __aenter__(self) -> MllpListener:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_name(writer)
        if self._stopping or len(self._connections) >= self.max_connections:
            self.stats.connections_refused += 1
            log.warning("MLLP connection from %s refused: %d connections open", peer,
                        len(self._connections))
            await _close(writer)
            return
        task = asyncio.current_task()
        assert task is not None  # always inside the task start_server created
        conn = _Connection(task, peer)
        self._connections.add(conn)
        self.stats.connections_accepted += 1
        _enable_keepalive(writer)
        try:
            await self._serve(conn, reader, writer)
        except asyncio.CancelledError:
            pass  # stop(): this task belongs to the listener, nobody awaits its result
        except (ConnectionError, OSError) as exc:
            log.info("MLLP connection from %s lost: %s", peer, type(exc).__name__)
        except Exception as exc:  # never let one connection's bug reach the event loop
            log.error("MLLP connection from %s failed: %s", peer, type(exc).__name__)
            log.debug("MLLP connection failure detail", exc_info=True)
        finally:
            self._connections.discard(conn)
            await _close(writer)

    async def _serve(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        decoder = MllpDecoder(self.max_frame_bytes)
        while not self._stopping:
            try:
                async with asyncio.timeout(self.idle_timeout_secs):
                    data = await reader.read(self._chunk)
            except TimeoutError:
                self.stats.idle_closed += 1
                log.info("MLLP connection from %s idle for %ss: closing", conn.peer,
                         self.idle_timeout_secs)
                return
            if not data:
                for err in decoder.close():
                    self._count(err, conn)
                return
            for item in decoder.feed(data):
                if self._stopping:
                    return  # read but not handled: no ACK, so the sender will resend
                if isinstance(item, Frame):
                    if not await self._handle_frame(conn, item, writer):
                        return
                else:
                    self._count(item, conn)
                    if item.kind is not FramingErrorKind.GARBAGE:
                        await self._send(conn, writer, _framing_reject(item))

    async def _handle_frame(
        self, conn: _Connection, item: Frame, writer: asyncio.StreamWriter
    ) -> bool:
        """Run ``on_message`` and send its ACK; False means "close the connection"."""
        self.stats.frames += 1
        conn.busy = True
        try:
            try:
                ack = await self._on_message(item.payload)
            except Exception as exc:
                self.stats.handler_failures += 1
                log.error("MLLP on_message failed for a message from %s (%s): closing "
                          "without ACK so that the sender resends", conn.peer,
                          type(exc).__name__)
                log.debug("on_message failure detail", exc_info=True)
                return False
            if ack:
                await self._send(conn, writer, ack)
            return True
        finally:
            conn.busy = False

    async def _send(self, conn: _Connection, writer: asyncio.StreamWriter, ack: bytes) -> None:
        writer.write(frame(ack))
        transport = writer.transport
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[0]:
            # A peer that never reads would block drain() forever once buffers fill up.
            async with asyncio.timeout(self.idle_timeout_secs):
                await writer.drain()
        else:
            # drain() waits only while writing is paused, and the transport resumes it once
            # its buffer is at or below the low-water mark: no wait, so no timer (a timer a
            # message cost ~4.5 us of the event loop's CPU).
            await writer.drain()
        self.stats.acks_sent += 1

    def _count(self, err: FramingError, conn: _Connection) -> None:
        kind = err.kind.value
        self.stats.framing_errors[kind] = self.stats.framing_errors.get(kind, 0) + 1
        log.warning("MLLP framing error from %s: %s", conn.peer, err.reason)


def _framing_reject(err: FramingError) -> bytes:
    code = (ErrorCode.APPLICATION_INTERNAL_ERROR if err.kind is FramingErrorKind.OVERSIZE
            else ErrorCode.SEGMENT_SEQUENCE_ERROR)
    return build_reject_ack(err.head, AckError(code, err.reason))


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _enable_keepalive(writer: asyncio.StreamWriter) -> None:
    # TCP keepalive notices dead peers (pulled cable, crashed gateway) on long-lived
    # connections that would otherwise only be reaped by the idle timeout.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(5):
            await writer.wait_closed()
