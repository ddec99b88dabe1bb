"""kill -9 after the ACK (anchor case 1): the message is processed exactly once after restart.

Runs the hub as an operator does: ``python -m hub serve`` subprocesses on one SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from connectors.mllp import MllpClient
from hub.hl7v2 import parse_message
from hub.store.db import upgrade
from tests.conftest import REPO, TEST_SECRET

pytestmark = pytest.mark.slow

ORU = (b"MSH|^~\\&|MON|W|HUB|H|20240105100000+0000||ORU^R01^ORU_R01|K01|P|2.6\r"
       b"PID|||MRN-1^^^H&1.2.3&ISO^MR\rOBR|1\r"
       b"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC"
       b"|||||F|||20240105095900+0000||||0011223344556677^EUI-64\r")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(url: str, mllp_port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HUB_DATABASE_URL": url, "HUB_ENV": "test",
           "HUB_SECRET_KEY": TEST_SECRET, "HUB_MAPPINGS_DIR": str(REPO / "mappings"),
           "HUB_MLLP_PORT": str(mllp_port), "HUB_MLLP_HOST": "127.0.0.1"}
    return subprocess.Popen([sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1",
                             "--port", str(free_port()), "--no-migrate", *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("MLLP port never opened")


def test_kill_9_after_ack_then_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    port = free_port()
    first = serve(url, port, "--no-worker")  # nothing processes: the ACK is all it did
    try:
        wait_for_port(port, first)

        async def send() -> bytes:
            async with MllpClient("127.0.0.1", port) as client:
                return await client.send(ORU)

        ack = asyncio.run(send())
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert parse_message(ack).get("MSA", 1) == "AA"
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("select status from inbound_message")).scalars().all() == [
            "received"]
    second = serve(url, free_port())  # with its worker
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                status = conn.execute(text("select status from inbound_message")).scalar()
            if status == "processed":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("not processed after restart")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*), max(attempts) from inbound_message")).one() \
            == (1, 1)
        assert conn.execute(text("select count(*), max(version_id) from resource where "
                                 "res_type = 'Observation'")).one() == (1, 1)
    engine.dispose()
