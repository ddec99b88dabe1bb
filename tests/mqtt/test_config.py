"""The MQTT file and topic matching: every problem at once with file:line:column and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub.channels.mqtt import content_type
from hub.channels.mqtt_config import (
    Subscription,
    filter_problem,
    load_mqtt_file,
    topic_matches,
)
from hub.errors import ConfigurationError
from hub.registry import ConnectorRegistry
from tests.conftest import REPO

# MQTT 5.0 section 4.7 (Topic Names and Topic Filters): the specification's own examples.
SPEC_EXAMPLES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("#", "$SYS/broker/uptime", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("devices/withings/#", "devices/ihealth/x", False),
]


@pytest.mark.parametrize(("filter_", "topic", "expected"), SPEC_EXAMPLES)
def test_topic_matching_follows_the_specification(filter_: str, topic: str,
                                                  expected: bool) -> None:
    assert topic_matches(filter_, topic) is expected


@pytest.mark.parametrize(("filter_", "problem"), [
    ("sport/tennis#", "'#' must be a whole level and the last one"),
    ("sport/tennis/#/ranking", "'#' must be a whole level and the last one"),
    ("sport+", "'+' must be a whole level"),
    ("", "empty topic filter"),
    ("$share//a/#", "shared subscription must be $share/GROUP/FILTER"),
    ("$share/group", "shared subscription must be $share/GROUP/FILTER"),
])
def test_invalid_filters_are_named(filter_: str, problem: str) -> None:
    assert filter_problem(filter_) == problem


def test_valid_filters_pass() -> None:
    for ok in ("sport/tennis/+", "+", "#", "a//b", "$share/hubs/devices/#", "+/+/#"):
        assert filter_problem(ok) is None


BROKEN = """\
version: 1
broker:
  host: 127.0.0.1
  port: 0
  protocol: "3.1.1"
  session_expiry_secs: 60
subscriptions:
  - filter: devices/withings/#
    source: withings
  - filter: devices/bad#
    source: nosuchvendor
    qos: 2
"""


def test_every_problem_is_reported_with_its_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigurationError) as caught:
        load_mqtt_file(path, ConnectorRegistry.discover().names())
    found = {(p.line, p.field): p.problem for p in caught.value.problems}
    assert all(p.file == str(path) for p in caught.value.problems)
    assert "Field required" in found[(2, "broker.client_id")]
    assert "greater than or equal to 1" in found[(4, "broker.port")]
    assert "'#' must be a whole level" in found[(10, "subscriptions[1].filter")]
    assert "unknown source 'nosuchvendor' (known: " in found[(11, "subscriptions[1].source")]
    assert "with QoS 2 the client confirms (PUBREC)" in found[(12, "subscriptions[1].qos")]
    assert len(found) == 5, found  # the broker's cross-field check waits for its fields


def test_cross_field_problems_name_the_section(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.yaml"
    path.write_text("version: 1\nbroker:\n  client_id: hub-1\n  protocol: '3.1.1'\n"
                    "  session_expiry_secs: 60\nsubscriptions:\n"
                    "  - {filter: a/#, source: hub, dedupe_property: id}\n")
    with pytest.raises(ConfigurationError) as caught:
        load_mqtt_file(path, ["hub"])
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (2, "broker")
    assert "session_expiry_secs is MQTT 5 only" in problem.problem


def test_missing_password_variable_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mqtt.yaml"
    path.write_text("version: 1\nbroker: {client_id: hub-1, username: hub, "
                    "password_env: HUB_TEST_MQTT_PW}\n"
                    "subscriptions: [{filter: a/#, source: hub}]\n")
    config = load_mqtt_file(path, ["hub"])
    monkeypatch.delenv("HUB_TEST_MQTT_PW", raising=False)
    with pytest.raises(ConfigurationError, match=r"HUB_TEST_MQTT_PW .* is not set"):
        config.broker.password()
    monkeypatch.setenv("HUB_TEST_MQTT_PW", "s3cret")
    assert config.broker.password() == "s3cret"
    assert "s3cret" not in repr(config)


def test_the_shipped_example_is_valid() -> None:
    config = load_mqtt_file(REPO / "mappings" / "mqtt.example.yaml",
                            ConnectorRegistry.discover().names())
    assert config.route("devices/withings/user-1/meas").source == "withings"  # type: ignore[union-attr]
    assert config.route("devices/cuff-7/readings").source == "hub"  # type: ignore[union-attr]
    assert config.route("elsewhere/x") is None


def test_cli_reports_a_broken_file_in_one_go_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.yaml"
    path.write_text(BROKEN)
    done = subprocess.run([sys.executable, "-m", "hub", "mqtt", "--config", str(path),
                           "--no-migrate"], cwd=REPO, capture_output=True, timeout=120,
                          env={"HUB_DATABASE_URL": f"sqlite:///{tmp_path}/hub.db",
                               "PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "none"})
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err
    assert err.startswith(f"hub: {path}: invalid MQTT file\n")
    assert f"{path}:11:5: subscriptions[1].source: Value error, unknown source" in err


def test_cli_without_a_file_says_how_to_configure(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hub", "mqtt", "--no-migrate"], cwd=tmp_path,
                          capture_output=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "none"})
    assert done.returncode == 2
    assert done.stderr.decode().startswith("hub: no MQTT file: pass --config, set "
                                           "HUB_MQTT_FILE or create ./mqtt.yaml")


def test_content_type_precedence() -> None:
    json_only = frozenset({"application/json"})
    hl7 = frozenset({"x-application/hl7-v2+er7", "application/hl7-v2", "text/plain"})
    plain = Subscription(filter="a/#", source="hub")
    fixed = Subscription(filter="a/#", source="hl7v2", content_type="text/plain")
    assert content_type(plain, json_only, None) == "application/json"
    assert content_type(plain, json_only, "text/csv") == "application/json"  # not accepted
    assert content_type(plain, hl7, "X-Application/HL7-v2+ER7; charset=utf-8") == \
        "x-application/hl7-v2+er7"
    assert content_type(plain, hl7, None) == "application/hl7-v2"
    assert content_type(fixed, hl7, "application/hl7-v2") == "text/plain"


def test_serve_refuses_to_start_with_a_broken_mqtt_file(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.yaml"
    path.write_text(BROKEN)
    env = {"HUB_DATABASE_URL": f"sqlite:///{tmp_path}/hub.db", "HUB_MQTT_FILE": str(path),
           "HUB_MLLP_ENABLED": "false", "PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "none"}
    done = subprocess.run([sys.executable, "-m", "hub", "serve", "--port", "1"], cwd=REPO,
                          capture_output=True, timeout=120, env=env)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert f"hub: {path}: invalid MQTT file\n" in err and "Traceback" not in err
