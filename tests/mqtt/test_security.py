"""TLS and a password against our own Mosquitto (a TLS listener with a CA made here, anonymous
access off, a password file): the channel verifies the broker's certificate and host, logs in
with the password from the variable ``password_env`` names, and a wrong password is refused by
the broker, retried, and never logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from hub.channels.mqtt import MqttChannel
from hub.channels.mqtt_config import MqttFile
from hub.runtime import Hub
from hub.store.db import upgrade
from hub.telemetry import Telemetry
from tests.conftest import make_settings
from tests.mqtt.conftest import OwnBroker, find_binary, publish
from tests.readings import canonical

pytestmark = pytest.mark.mqtt

PASSWORD = "correct horse battery staple"  # a test broker's password


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(where: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it; returns the CA."""
    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([
                  x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                  critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    (where / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (where / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (where / "server.key").write_bytes(_pem_key(server_key))
    return where / "ca.pem"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[OwnBroker, Path]]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    ca = make_pki(workdir)
    passwd = workdir / "passwd"
    subprocess.run([find_binary("mosquitto_passwd"), "-c", "-b", str(passwd), "hub", PASSWORD],
                   check=True, capture_output=True)
    subprocess.run([find_binary("mosquitto_passwd"), "-b", str(passwd), "device", PASSWORD],
                   check=True, capture_output=True)
    broker = OwnBroker(find_binary("mosquitto"), workdir, extra=(
        f"cafile {ca}\ncertfile {workdir}/server.pem\nkeyfile {workdir}/server.key\n"
        f"allow_anonymous false\npassword_file {passwd}\n"))
    broker.start()
    yield broker, ca
    broker.stop()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    url = f"sqlite:///{tmp_path}/hub.db"
    upgrade(url)
    built = Hub.build(make_settings(url), Telemetry.disabled())
    yield built
    built.engine.dispose()


def tls_config(broker: OwnBroker, ca: Path) -> MqttFile:
    return MqttFile.model_validate({
        "version": 1,
        "broker": {"host": "127.0.0.1", "port": broker.port, "client_id": "hub-tls",
                   "username": "hub", "password_env": "HUB_TEST_MQTT_PASSWORD",
                   "tls": {"ca_file": str(ca)}, "reconnect_min_secs": 1,
                   "reconnect_max_secs": 1},
        "subscriptions": [{"filter": "devices/#", "source": "hub"}]})


def test_tls_with_a_password_stores_and_acknowledges(
    hub: Hub, tls_broker: tuple[OwnBroker, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, ca = tls_broker
    monkeypatch.setenv("HUB_TEST_MQTT_PASSWORD", PASSWORD)
    channel = MqttChannel(hub, tls_config(broker, ca))
    channel.start()
    try:
        assert channel.wait_subscribed(30), broker.log_text()
        body = orjson.dumps(canonical(1, device="tls-dev"))
        publish("127.0.0.1", broker.port, "devices/x", body, ca_file=ca,
                auth=("device", PASSWORD))
        deadline = time.monotonic() + 30
        while channel.stats.acked < 1:
            assert time.monotonic() < deadline, "no PUBACK over TLS"
            time.sleep(0.02)
    finally:
        channel.stop()
    with hub.engine.connect() as conn:
        stored = conn.execute(text("SELECT body FROM inbound_message")).scalars().all()
    assert [bytes(b) for b in stored] == [body]
    assert "Received PUBACK from hub-tls" in broker.log_text()


def test_a_wrong_password_is_refused_retried_and_not_logged(
    hub: Hub, tls_broker: tuple[OwnBroker, Path], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    broker, ca = tls_broker
    monkeypatch.setenv("HUB_TEST_MQTT_PASSWORD", "wrong-password-123")
    caplog.set_level(logging.INFO)
    channel = MqttChannel(hub, tls_config(broker, ca))
    channel.start()
    try:
        assert not channel.wait_subscribed(4)
    finally:
        channel.stop()
    refusals = [r.getMessage() for r in caplog.records if "refused the connection" in r.message]
    assert len(refusals) >= 2, caplog.text  # refused, retried, refused again
    assert "Not authorized" in refusals[0] or "Bad user name or password" in refusals[0]
    assert "wrong-password-123" not in caplog.text and PASSWORD not in caplog.text
