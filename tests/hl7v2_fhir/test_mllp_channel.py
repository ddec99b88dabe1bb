"""The MLLP channel over real TCP (anchor cases 5-8): ACK only after the durable write, framing
torture, concurrent senders, duplicate MSH-10, AE/AR, enhanced mode. Both databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.mllp import MllpClient, MllpClientError
from hub.channels.mllp import MllpChannel
from hub.hl7v2 import frame, parse_message
from hub.runtime import Hub
from hub.store import inbox
from hub.store.models import InboundMessage, Resource
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import make_settings

HOST = "127.0.0.1"


def oru(ctrl: str, sender: str = "MON", enhanced: str = "", hr: int = 72) -> bytes:
    modes = f"|||{enhanced}" if enhanced else ""
    return (f"MSH|^~\\&|{sender}|WARD|HUB|HOSP|20240105100000+0000||ORU^R01^ORU_R01|{ctrl}|P|"
            f"2.6{modes}\rPID|||MRN-1^^^H&1.2.3&ISO^MR\rOBR|1\r"
            f"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.1|{hr}|264864^MDC_DIM_BEAT_PER_MIN^"
            f"MDC|||||F|||2024010509{int(ctrl[-2:]) % 60:02d}00+0000\r").encode()


def msa(ack: bytes) -> tuple[str, str]:
    parsed = parse_message(ack)
    return parsed.get("MSA", 1), parsed.get("MSA", 2)


@pytest.fixture
def channel_hub(db_url: str) -> Iterator[Hub]:
    hub = Hub.build(make_settings(db_url, mllp_idle_timeout_secs=2.0,
                                  mllp_max_frame_bytes=64 * 1024), Telemetry.disabled())
    yield hub
    hub.engine.dispose()


def with_channel(hub: Hub, body: Callable[[MllpChannel], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        channel = MllpChannel(hub, host=HOST, port=0, **kw)
        await channel.start()
        try:
            await body(channel)
        finally:
            await channel.stop()

    asyncio.run(asyncio.wait_for(main(), timeout=120))


def count(hub: Hub, model: Any = InboundMessage) -> int:
    with hub.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def rows(hub: Hub) -> list[Any]:
    with hub.engine.connect() as conn:
        return list(conn.execute(select(InboundMessage.__table__).order_by(
            InboundMessage.seq)).all())


def test_ack_only_after_durable_write_then_processed(channel_hub: Hub) -> None:
    async def body(channel: MllpChannel) -> None:
        async with MllpClient(HOST, channel.port) as client:
            ack = await client.send(oru("C01"))
        assert msa(ack) == ("AA", "C01")
        # The ACK came back, so the message is already committed (another connection sees it).
        (row,) = rows(channel_hub)
        assert row.status == "received" and row.reply == ack and row.channel == "mllp"

    with_channel(channel_hub, body)
    drain(channel_hub.pipeline, channel_hub.engine, 10)
    assert count(channel_hub, Resource) >= 1
    (row,) = rows(channel_hub)
    assert row.status == "processed"


def test_framing_torture(channel_hub: Hub) -> None:
    async def body(channel: MllpChannel) -> None:
        reader, writer = await asyncio.open_connection(HOST, channel.port)
        # three messages in one write, with NULs and junk between frames
        writer.write(frame(oru("C01")) + b"\x00\x00junk" + frame(oru("C02")) + b"\r\n"
                     + frame(oru("C03")))
        # one more split across many writes, byte by byte for its header
        data = frame(oru("C04"))
        for i in range(40):
            writer.write(data[i:i + 1])
            await writer.drain()
        writer.write(data[40:])
        await writer.drain()
        client_frames: list[bytes] = []
        from hub.hl7v2 import Frame, MllpDecoder
        decoder = MllpDecoder()
        async with asyncio.timeout(20):
            while len(client_frames) < 4:
                chunk = await reader.read(65536)
                assert chunk, "closed early"
                client_frames += [f.payload for f in decoder.feed(chunk) if isinstance(f, Frame)]
        assert [msa(a) for a in client_frames] == [("AA", f"C0{i}") for i in range(1, 5)]
        # a frame cut short by the next start block: AR for the cut one, AA for the next
        writer.write(b"\x0b" + oru("C05")[:50] + frame(oru("C06")))
        await writer.drain()
        async with asyncio.timeout(20):
            got: list[bytes] = []
            while len(got) < 2:
                chunk = await reader.read(65536)
                assert chunk
                got += [f.payload for f in decoder.feed(chunk) if isinstance(f, Frame)]
        assert msa(got[0])[0] == "AR" and msa(got[1]) == ("AA", "C06")
        writer.close()
        # an oversize frame (cap 64 KiB here): AR, and the connection stays usable
        async with MllpClient(HOST, channel.port) as client:
            big = oru("C07") + b"NTE|1||" + b"x" * 70_000 + b"\r"
            assert msa(await client.send(big))[0] == "AR"
            assert msa(await client.send(oru("C08"))) == ("AA", "C08")
        # an idle connection is closed cleanly by the listener (idle timeout 2 s here)
        idle_reader, idle_writer = await asyncio.open_connection(HOST, channel.port)
        async with asyncio.timeout(10):
            assert await idle_reader.read() == b""
        idle_writer.close()

    with_channel(channel_hub, body)
    statuses = sorted(r.status for r in rows(channel_hub))
    assert statuses.count("received") == 6  # C01-C04, C06, C08; the cut/oversize got AR only


def test_concurrent_senders_each_message_once(channel_hub: Hub) -> None:
    async def sender(port: int, who: int) -> list[bytes]:
        async with MllpClient(HOST, port) as client:
            return [await client.send(oru(f"S{who:02d}M{n:02d}", sender=f"MON{who}"))
                    for n in range(10)]

    async def body(channel: MllpChannel) -> None:
        acks = await asyncio.gather(*(sender(channel.port, w) for w in range(20)))
        assert all(msa(a)[0] == "AA" for batch in acks for a in batch)

    with_channel(channel_hub, body)
    assert count(channel_hub) == 200
    keys = {r.dedupe_key.rsplit("@", 1)[0] for r in rows(channel_hub)}
    assert len(keys) == 200


def test_duplicate_msh10_gets_the_original_ack_and_is_stored_once(channel_hub: Hub) -> None:
    async def body(channel: MllpChannel) -> None:
        async with MllpClient(HOST, channel.port) as client:
            first = await client.send(oru("D01", hr=72))
            again = await client.send(oru("D01", hr=72))
            resent_changed = await client.send(oru("D01", hr=99))  # same key, other content
            other_sender = await client.send(oru("D01", sender="OTHER"))
        assert first == again == resent_changed  # byte for byte, fresh MSH-10 included
        assert msa(other_sender) == ("AA", "D01") and other_sender != first

    with_channel(channel_hub, body)
    assert count(channel_hub) == 2  # the original and the other sender's


def test_outside_the_window_a_repeat_is_ingested_anew(db_url: str) -> None:
    hub = Hub.build(make_settings(db_url, hl7_dedupe_window_secs=1.0), Telemetry.disabled())

    async def body(channel: MllpChannel) -> None:
        async with MllpClient(HOST, channel.port) as client:
            first = await client.send(oru("W01"))
            await asyncio.sleep(2.2)
            later = await client.send(oru("W01"))
        assert msa(first) == msa(later) == ("AA", "W01") and first != later

    try:
        with_channel(hub, body)
        assert count(hub) == 2  # distinct window keys keep (source, dedupe_key) unique
    finally:
        hub.engine.dispose()


def test_ae_and_ar_with_reasons_kept(channel_hub: Hub) -> None:
    no_pid3 = (b"MSH|^~\\&|EHR|H|HUB|H|20240105100000||ADT^A01|E01|P|2.5.1\r"
               b"EVN|A01|20240105100000\rPID|||\r")
    not_a_number = oru("E02").replace(b"|72|", b"|seventy|")
    unsupported = b"MSH|^~\\&|X|Y|HUB|H|20240105100000||ORM^O01|E03|P|2.5\rORC|NW\r"

    async def body(channel: MllpChannel) -> None:
        async with MllpClient(HOST, channel.port) as client:
            ae = parse_message(await client.send(no_pid3))
            assert ae.get("MSA", 1) == "AE" and ae.get("MSA", 2) == "E01"
            assert ae.get("ERR", 2) == "PID" and ae.get("ERR", 2, 3) == "3"  # ERL: PID-3
            assert ae.get("ERR", 3) == "101"
            nan = parse_message(await client.send(not_a_number))
            assert nan.get("MSA", 1) == "AE" and nan.get("ERR", 2, 3) == "5"
            ar = parse_message(await client.send(unsupported))
            assert ar.get("MSA", 1) == "AR" and ar.get("ERR", 3) == "200"
            garbage = parse_message(await client.send(b"\x01\x02 not HL7 at all"))
            assert garbage.get("MSA", 1) == "AR"

    with_channel(channel_hub, body)
    stored = rows(channel_hub)
    assert [r.status for r in stored] == ["failed"] * 4
    assert stored[0].error.startswith("PID-3: PID-3 patient identifier list is empty")
    assert "unsupported message type" in stored[2].error
    assert all(r.body for r in stored)  # the raw bytes are kept, never dropped


def test_enhanced_mode(channel_hub: Hub) -> None:
    async def body(channel: MllpChannel) -> None:
        async with MllpClient(HOST, channel.port, timeout_secs=1.5) as client:
            assert msa(await client.send(oru("N01", enhanced="AL|NE"))) == ("CA", "N01")
            assert msa(await client.send(oru("N02", enhanced="NE|AL"))) == ("AA", "N02")
            bad = oru("N03", enhanced="AL|NE").replace(b"|72|", b"|x|")
            assert msa(await client.send(bad))[0] == "CE"
            wrong = oru("N04", enhanced="AL|AL").replace(b"ORU^R01^ORU_R01", b"ORM^O01")
            assert msa(await client.send(wrong))[0] == "CR"
            # NE/NE: stored, and no ACK at all
            with pytest.raises(MllpClientError):
                await client.send(oru("N05", enhanced="NE|NE"))

    with_channel(channel_hub, body)
    assert count(channel_hub) == 5


def test_write_failure_closes_without_ack(channel_hub: Hub) -> None:
    async def body(channel: MllpChannel) -> None:
        assert channel.writer is not None
        channel_hub.engine.dispose()
        original = channel.writer.engine
        from sqlalchemy import create_engine
        channel.writer.engine = create_engine("sqlite:////nonexistent/dir/db.sqlite")
        try:
            async with MllpClient(HOST, channel.port, timeout_secs=10) as client:
                with pytest.raises(MllpClientError):
                    await client.send(oru("F01"))
        finally:
            channel.writer.engine = original

    with_channel(channel_hub, body)
    assert count(channel_hub) == 0


def test_receipt_time_bound(channel_hub: Hub) -> None:
    """100 sequential messages on one connection stay well under a second each."""
    async def body(channel: MllpChannel) -> None:
        async with MllpClient(HOST, channel.port) as client:
            start = time.monotonic()
            for n in range(100):
                assert msa(await client.send(oru(f"T{n:02d}")))[0] == "AA"
            assert time.monotonic() - start < 60

    with_channel(channel_hub, body)
    assert inbox.counts_by_status(channel_hub.engine) == {"received": 100}


def test_connection_dropped_before_the_ack_then_resent(channel_hub: Hub) -> None:
    """Anchor case 6: the sender vanished after sending; its retransmission gets the one ACK."""
    async def body(channel: MllpChannel) -> None:
        _, writer = await asyncio.open_connection(HOST, channel.port)
        writer.write(frame(oru("R01")))
        await writer.drain()
        writer.close()  # gone before any ACK could be read
        deadline = time.monotonic() + 10
        while count(channel_hub) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        async with MllpClient(HOST, channel.port) as client:
            ack = await client.send(oru("R01"))
        (row,) = rows(channel_hub)
        assert msa(ack) == ("AA", "R01") and ack == row.reply

    with_channel(channel_hub, body)
