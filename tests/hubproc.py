"""The hub as an operator runs it: ``python -m hub serve|worker|keys`` subprocesses on one database.

Used by the crash and scale-out tests. Output goes to a log file per process, so a failing test
can show what the hub said, and a test can read the worker's own count of what it processed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import REPO, TEST_SECRET


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hub_env(db_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "HUB_DATABASE_URL": db_url, "HUB_ENV": "test",
            "HUB_SECRET_KEY": TEST_SECRET, "HUB_MAPPINGS_DIR": str(REPO / "mappings"),
            "OTEL_TRACES_EXPORTER": "none", **extra}


def hub_command(env: dict[str, str], *args: str) -> str:
    """Run one ``hub`` command to completion; its stdout."""
    done = subprocess.run([sys.executable, "-m", "hub", *args], env=env, cwd=REPO,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


class HubProcess:
    """One long-running ``hub`` subprocess (serve or worker)."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "hub", *args], env=env, cwd=REPO,
                                         stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output():
            assert self.alive(), f"hub exited ({self.proc.returncode}):\n{self.output()}"
            assert time.monotonic() < deadline, f"no '{needle}' in:\n{self.output()}"
            time.sleep(0.05)

    def wait_http(self, base_url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.alive(), f"hub exited ({self.proc.returncode}):\n{self.output()}"
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"/health never answered:\n{self.output()}"
            time.sleep(0.05)

    def kill_9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait (the graceful path); SIGKILL only if it does not exit."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def processed_count(self) -> int:
        """The worker's own count of committed messages (logged when its loop stops)."""
        found = re.findall(r"worker loop stopped; (\d+) messages processed", self.output())
        assert found, f"the worker did not report its count:\n{self.output()}"
        return sum(int(n) for n in found)


def inbox_statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM inbound_message "
                                 "GROUP BY status")).all()
    return {str(r[0]): int(r[1]) for r in rows}


def wait_drained(engine: Engine, procs: list[HubProcess], timeout: float = 180) -> None:
    """Until no message is waiting in 'received' (the workers keep running)."""
    deadline = time.monotonic() + timeout
    while inbox_statuses(engine).get("received", 0):
        for proc in procs:
            assert proc.alive(), f"hub exited ({proc.proc.returncode}):\n{proc.output()}"
        assert time.monotonic() < deadline, f"backlog not drained: {inbox_statuses(engine)}"
        time.sleep(0.1)
