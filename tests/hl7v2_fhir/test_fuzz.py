"""Property: whatever bytes arrive, the hub's MLLP channel answers ACKs or closes cleanly, and
keeps serving (anchor cases 8-9). Runs against the real channel (listener, door, inbox)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.channels.mllp import MllpChannel, MllpThread
from hub.hl7v2 import Frame, MllpDecoder, frame, parse_message
from hub.runtime import Hub
from hub.store.db import upgrade
from hub.telemetry import Telemetry
from tests.conftest import make_settings

VALID = (b"MSH|^~\\&|MON|W|HUB|H|20240105100000+0000||ORU^R01^ORU_R01|Z01|P|2.6\r"
         b"PID|||MRN-1^^^H&1.2.3&ISO^MR\rOBR|1\r"
         b"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC"
         b"|||||F\r")


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'hub.db'}"
    upgrade(url)
    hub = Hub.build(make_settings(url, sqlite_synchronous="NORMAL", mllp_idle_timeout_secs=5.0,
                                  mllp_max_frame_bytes=16 * 1024), Telemetry.disabled())
    runner = MllpThread(MllpChannel(hub, host="127.0.0.1", port=0))
    bound = runner.start()
    yield bound
    runner.stop()
    hub.engine.dispose()


def exchange(port: int, data: bytes) -> list[bytes]:
    """Send ``data``, half-close, read until the listener closes; the frames it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    decoder = MllpDecoder()
    frames = [f.payload for f in decoder.feed(received) if isinstance(f, Frame)]
    assert not [e for e in decoder.close()], "listener sent a broken frame"
    return frames


def framed(data: bytes) -> bytes:
    """Start block, data, end block (raw: the data may itself hold block characters)."""
    return b"\x0b" + data + b"\x1c\r"


def mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in flips:
        out[position % len(out)] = value
    return bytes(out)


payloads = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=2048).map(framed),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8).map(
        lambda flips: framed(mutate(VALID, flips))),
    st.lists(st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\x1c\r", b"MSH|", b"|", b"^~\\&",
                              b"\x00", VALID]), max_size=20).map(b"".join),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=payloads)
def test_any_bytes_get_acks_or_a_clean_close(port: int, data: bytes) -> None:
    for ack in exchange(port, data):
        parsed = parse_message(ack)  # every answer is a well-formed ACK
        assert parsed.message_type == "ACK"
        assert parsed.get("MSA", 1) in ("AA", "AE", "AR", "CA", "CE", "CR")


def test_still_serving_after_the_storm(port: int) -> None:
    acks = exchange(port, frame(VALID.replace(b"Z01", b"Z99")))
    assert [parse_message(a).get("MSA", 1) for a in acks] == ["AA"]


def test_oversize_frame_refused_not_stored(port: int) -> None:
    acks = exchange(port, frame(VALID + b"NTE|1||" + b"x" * 20_000 + b"\r"))
    assert [parse_message(a).get("MSA", 1) for a in acks] == ["AR"]
