"""Real brokers for the MQTT tests: the system Mosquitto (127.0.0.1:1883) and our own.

Tests that share the system broker use a unique topic prefix and client id, and purge the
persistent session they made when they finish. Tests that restart or inspect the broker run
their own ``mosquitto`` (a free port, persistence in the test's directory, every packet logged:
its log is the broker's own record of which PUBLISH went to the hub and which PUBACK came back).

When Mosquitto is missing they fail under CI (CI=true or HUB_REQUIRE_MQTT=1) and skip elsewhere,
with the reason, as the PostgreSQL tests do.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SYSTEM_BROKER = ("127.0.0.1", 1883)


def _require_mqtt() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("HUB_REQUIRE_MQTT"))


def _missing(message: str) -> None:
    if _require_mqtt():
        pytest.fail(message + " (required in CI)")
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def system_broker() -> tuple[str, int]:
    if not port_open(*SYSTEM_BROKER):
        _missing("Mosquitto not reachable at 127.0.0.1:1883")
    return SYSTEM_BROKER


@pytest.fixture
def prefix() -> str:
    """A topic prefix (and client id) no other test or engineer uses."""
    return f"hubtest-{uuid.uuid4().hex[:12]}"


def publish(host: str, port: int, topic: str, payload: bytes, *, qos: int = 1,
            user_properties: list[tuple[str, str]] | None = None, timeout: float = 10,
            ca_file: Path | None = None, auth: tuple[str, str] | None = None) -> None:
    """Publish one message and wait for the broker's PUBACK (the broker owns it then)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    if ca_file is not None:
        client.tls_set_context(ssl.create_default_context(cafile=str(ca_file)))
    if auth is not None:
        client.username_pw_set(*auth)
    client.connect(host, port)
    client.loop_start()
    try:
        props = None
        if user_properties:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = user_properties
        info = client.publish(topic, payload, qos=qos, properties=props)
        info.wait_for_publish(timeout)
        assert info.is_published(), "the broker did not acknowledge the publish"
    finally:
        client.disconnect()
        client.loop_stop()


def purge_session(host: str, port: int, client_id: str) -> None:
    """End a persistent session (clean start, expiry 0) so the broker stops queueing for it."""
    if not port_open(host, port):
        return
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(host, port, clean_start=True, properties=props)
    client.loop_start()
    deadline = time.monotonic() + 5
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()


class OwnBroker:
    """A ``mosquitto`` process on a free port, with persistence, that a test can restart."""

    def __init__(self, binary: str, workdir: Path, extra: str = "allow_anonymous true\n") -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = workdir
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            # As root, mosquitto would switch to user "mosquitto", who cannot write here.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n{extra}"
            f"persistence true\npersistence_location {workdir}/\n"
            f"log_dest file {self.log}\nlog_type all\nconnection_messages true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            assert self.proc.poll() is None, f"mosquitto exited:\n{self.log_text()}"
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: a graceful broker restart (the session store is written to disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def count(self, needle: str) -> int:
        return self.log_text().count(needle)

    def wait_for(self, needle: str, times: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.count(needle) < times:
            assert time.monotonic() < deadline, f"{times}x '{needle}' not in broker log"
            time.sleep(0.05)


def find_binary(name: str) -> str:
    """A Mosquitto program (PATH, then /usr/sbin where Debian puts the broker)."""
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                   else None)
    if found is None:
        _missing(f"{name} is not installed (Debian package mosquitto)")
    assert found is not None
    return found


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = OwnBroker(find_binary("mosquitto"), workdir)
    broker.start()
    yield broker
    broker.stop()
