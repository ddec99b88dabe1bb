"""MllpListener with real TCP peers on 127.0.0.1 (anchor case 8: framing torture, concurrency,
idle timeout, hostile input; the listener must answer or close cleanly, and never die)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.mllp import MllpClient, MllpClientError, MllpListener, send_messages
from hub.hl7v2 import (
    AckCode,
    Hl7ParseError,
    build_ack,
    build_reject_ack,
    frame,
    parse_message,
)

HOST = "127.0.0.1"


def message(ctrl: str, sender: str = "DEV") -> bytes:
    return (f"MSH|^~\\&|{sender}|FAC|HUB|HUBFAC|20240101120000||ORU^R01^ORU_R01|{ctrl}|P|2.5\r"
            f"PID|1||P-{ctrl}\rOBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F\r").encode()


def msa(ack: bytes) -> tuple[str, str]:
    parsed = parse_message(ack)
    return parsed.get("MSA", 1), parsed.get("MSA", 2)


class Recorder:
    """An on_message like the hub's: parse, remember, answer AA (or AR if unparseable)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.received: list[bytes] = []
        self.delay = delay

    async def __call__(self, payload: bytes) -> bytes:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(payload)
        try:
            msg = parse_message(payload)
        except Hl7ParseError as err:
            return build_reject_ack(payload, err)
        return build_ack(msg, AckCode.AA)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=60))


def with_listener(
    handler: Callable[[bytes], Awaitable[bytes]] | None = None, **options: Any
) -> Callable[[Callable[[MllpListener], Coroutine[Any, Any, None]]], None]:
    """Run the decorated coroutine against a started listener on a free port."""

    def decorate(body: Callable[[MllpListener], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            async with MllpListener(HOST, 0, on_message=handler or Recorder(),
                                    **options) as listener:
                await body(listener)

        run(main())

    return decorate


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read()


def test_several_messages_in_one_write() -> None:
    recorder = Recorder()

    @with_listener(recorder)
    async def _(listener: MllpListener) -> None:
        async with MllpClient(HOST, listener.port, timeout_secs=5) as client:
            await client.write_raw(b"".join(frame(message(f"M{i}")) for i in range(5)))
            acks = [await client.receive() for _ in range(5)]
        assert [msa(a) for a in acks] == [("AA", f"M{i}") for i in range(5)]
        assert recorder.received == [message(f"M{i}") for i in range(5)]


def test_message_split_across_writes() -> None:
    @with_listener()
    async def _(listener: MllpListener) -> None:
        data = frame(message("SPLIT"))
        async with MllpClient(HOST, listener.port, timeout_secs=5) as client:
            for i in range(0, len(data), 7):
                await client.write_raw(data[i : i + 7])
                await asyncio.sleep(0.001)
            assert msa(await client.receive()) == ("AA", "SPLIT")


def test_garbage_and_nulls_between_frames() -> None:
    @with_listener()
    async def _(listener: MllpListener) -> None:
        async with MllpClient(HOST, listener.port, timeout_secs=5) as client:
            await client.write_raw(b"\x00\x00hello" + frame(message("G1")) + b"\x00" * 10
                                   + frame(message("G2")) + b"\r\n")
            assert msa(await client.receive()) == ("AA", "G1")
            assert msa(await client.receive()) == ("AA", "G2")
        assert listener.stats.framing_errors == {"garbage": 2}


def test_oversize_frame_gets_an_ar_and_the_connection_recovers() -> None:
    recorder = Recorder()

    @with_listener(recorder, max_frame_bytes=2048)
    async def _(listener: MllpListener) -> None:
        big = message("BIG") + b"NTE|1||" + b"x" * 10_000 + b"\r"
        async with MllpClient(HOST, listener.port, timeout_secs=5) as client:
            await client.write_raw(frame(big) + frame(message("AFTER")))
            ar = await client.receive()
            assert msa(ar) == ("AR", "BIG")
            assert "size limit" in parse_message(ar).get("ERR", 7)
            assert msa(await client.receive()) == ("AA", "AFTER")
        assert recorder.received == [message("AFTER")]  # the big one never reached the hub


def test_missing_end_block_gets_an_ar_when_the_next_frame_starts() -> None:
    @with_listener()
    async def _(listener: MllpListener) -> None:
        async with MllpClient(HOST, listener.port, timeout_secs=5) as client:
            await client.write_raw(b"\x0b" + message("CUT") + frame(message("NEXT")))
            assert msa(await client.receive()) == ("AR", "CUT")
            assert msa(await client.receive()) == ("AA", "NEXT")


def test_unparseable_frame_gets_the_handlers_ar() -> None:
    @with_listener()
    async def _(listener: MllpListener) -> None:
        acks = await send_messages(HOST, listener.port, [b"not hl7 at all", message("OK")])
        assert [msa(a)[0] for a in acks] == ["AR", "AA"]


def test_idle_connection_is_closed() -> None:
    @with_listener(idle_timeout_secs=0.3)
    async def _(listener: MllpListener) -> None:
        reader, writer = await asyncio.open_connection(HOST, listener.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await read_until_closed(reader) == b""  # server closed: EOF
        assert 0.2 < loop.time() - started < 3
        assert listener.stats.idle_closed == 1
        writer.close()
        await writer.wait_closed()


def test_twenty_concurrent_senders_keep_per_connection_order() -> None:
    recorder = Recorder()

    @with_listener(recorder)
    async def _(listener: MllpListener) -> None:
        async def sender(n: int) -> list[bytes]:
            return await send_messages(HOST, listener.port,
                                       [message(f"S{n}-{i}", f"DEV{n}") for i in range(10)])

        results = await asyncio.gather(*(sender(n) for n in range(20)))
        for n, acks in enumerate(results):
            assert [msa(a) for a in acks] == [("AA", f"S{n}-{i}") for i in range(10)]
        assert len(recorder.received) == 200
        for n in range(20):
            mine = [p for p in recorder.received if f"|DEV{n}|".encode() in p]
            assert mine == [message(f"S{n}-{i}", f"DEV{n}") for i in range(10)]
        assert listener.stats.connections_accepted == 20


def test_handler_failure_closes_without_ack_and_the_listener_carries_on() -> None:
    calls: list[bytes] = []

    async def flaky(payload: bytes) -> bytes:
        calls.append(payload)
        if b"|FAIL|" in payload:
            raise RuntimeError("store unavailable")
        return build_ack(parse_message(payload), AckCode.AA)

    @with_listener(flaky)
    async def _(listener: MllpListener) -> None:
        with pytest.raises(MllpClientError, match="closed"):
            await send_messages(HOST, listener.port, [message("FAIL"), message("NEVER")],
                                timeout_secs=5)
        assert listener.stats.handler_failures == 1
        acks = await send_messages(HOST, listener.port, [message("LATER")])
        assert msa(acks[0]) == ("AA", "LATER")
        assert message("NEVER") not in calls


def test_empty_reply_sends_nothing() -> None:
    async def quiet(payload: bytes) -> bytes:
        return b"" if b"|QUIET|" in payload else build_ack(parse_message(payload), AckCode.AA)

    @with_listener(quiet)
    async def _(listener: MllpListener) -> None:
        async with MllpClient(HOST, listener.port, timeout_secs=5) as client:
            await client.write_raw(frame(message("QUIET")) + frame(message("LOUD")))
            assert msa(await client.receive()) == ("AA", "LOUD")


def test_connections_beyond_the_cap_are_closed() -> None:
    @with_listener(max_connections=2)
    async def _(listener: MllpListener) -> None:
        first = await asyncio.open_connection(HOST, listener.port)
        second = await asyncio.open_connection(HOST, listener.port)
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection(HOST, listener.port)
        assert await read_until_closed(reader) == b""
        assert listener.stats.connections_refused == 1
        for _, w in (first, second, (reader, writer)):
            w.close()
            await w.wait_closed()
        await asyncio.sleep(0.05)
        acks = await send_messages(HOST, listener.port, [message("ROOM")])
        assert msa(acks[0]) == ("AA", "ROOM")


def test_stop_lets_the_message_in_flight_finish() -> None:
    async def main() -> None:
        recorder = Recorder(delay=0.3)
        listener = MllpListener(HOST, 0, on_message=recorder)
        with pytest.raises(RuntimeError, match="not started"):
            _ = listener.port
        await listener.start()
        port = listener.port
        idle_reader, idle_writer = await asyncio.open_connection(HOST, port)
        async with MllpClient(HOST, port, timeout_secs=5) as client:
            await client.write_raw(frame(message("INFLIGHT")))
            await asyncio.sleep(0.1)  # the handler is now running
            stopping = asyncio.create_task(listener.stop())
            assert msa(await client.receive()) == ("AA", "INFLIGHT")
            await stopping
        assert await read_until_closed(idle_reader) == b""  # idle connection closed at once
        idle_writer.close()
        await idle_writer.wait_closed()
        assert listener.active_connections == 0
        with pytest.raises(OSError):  # no longer listening
            await asyncio.open_connection(HOST, port)

    run(main())


HOSTILE = [
    b"", b"\x0b", b"\x1c\r", b"\x0b\x0b\x0b", b"\x0b\x1c\r", b"\x0b" + b"A" * 5000,
    b"\x0bMSH|^~\\&|\x1c\r", b"\x0bMSH\x1c\r", b"\x0b\xff\xfe\x00M\x1c\r",
    b"\x0bFHS|^~\\&\rBHS\x1c\r", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)),
]


async def _junk_then_good(listener: MllpListener, junk: bytes, chunk: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, listener.port)
    for i in range(0, len(junk), chunk):
        writer.write(junk[i : i + chunk])
    await writer.drain()
    writer.write_eof()
    # Every input ends in ACKs (for frames) or a clean close: never a hang or a reset.
    await read_until_closed(reader)
    writer.close()
    await writer.wait_closed()
    acks = await send_messages(HOST, listener.port, [message("STILL-ALIVE")], timeout_secs=5)
    assert msa(acks[0]) == ("AA", "STILL-ALIVE")


def test_hostile_inputs_never_kill_the_listener() -> None:
    rnd = random.Random(7)
    blobs = HOSTILE + [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 3000)))
                       for _ in range(20)]

    @with_listener(max_frame_bytes=1024)
    async def _(listener: MllpListener) -> None:
        for blob in blobs:
            await _junk_then_good(listener, blob, rnd.randint(1, 512))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200),
                          st.sampled_from([b"\x0b", b"\x1c\r", b"MSH|^~\\&|", b"\r", b"\x00"])),
                max_size=20).map(b"".join),
       st.integers(min_value=1, max_value=64))
def test_arbitrary_byte_streams_never_kill_the_listener(junk: bytes, chunk: int) -> None:
    @with_listener(max_frame_bytes=256)
    async def _(listener: MllpListener) -> None:
        await _junk_then_good(listener, junk, chunk)
