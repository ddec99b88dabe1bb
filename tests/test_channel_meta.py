"""What a channel knows beside the body reaches device mappings as ``meta``: an MQTT message's
topic (``meta.topic``, ``meta.topic_levels``), so a device that names itself only in its topic
can be mapped. Checked through the mapping engine, ``hub mappings test`` (a golden case's
``topic``), ``hub convert --topic``, and the pipeline reading ``meta`` stored with the raw
message (both backends). The MQTT channel storing it: tests/mqtt/test_channel.py.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from connectors._testing import run_hub
from hub.contracts import Identifier, mqtt_meta
from hub.fhir.ids import registry_id
from hub.identity.admin import assign_device
from hub.mappings.catalogue import load_mapping_set
from hub.runtime import Hub
from hub.store import inbox, resources
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import REPO, make_settings

DEVICE_SYSTEM = "urn:example:topic-device"
TOPIC = "rpm/cuff-7/vitals"
MAPPING = f"""\
version: 1
name: topicdev
description: heart rate whose device is named only by its MQTT topic (rpm/<device>/vitals)
measurements:
  - each: readings
    type: "'heart-rate'"
    time: item.t
    device: {{system: "'{DEVICE_SYSTEM}'", value: "meta.topic_levels[1]"}}
    patient: {{system: "'urn:example:patient'", value: root.patient}}
    unit: "'/min'"
    values: {{value: item.hr}}
"""
PAYLOAD = {"patient": "p-1", "readings": [{"t": "2026-03-01T08:00:00Z", "hr": 71}]}


def mappings_with_topic_device(root: Path) -> Path:
    """The built-in mappings plus ``topicdev`` and its golden test (with and without a topic)."""
    target = root / "mappings"
    shutil.copytree(REPO / "mappings", target)
    (target / "devices" / "topicdev.yaml").write_text(MAPPING)
    cases = target / "devices" / "topicdev"
    cases.mkdir()
    (cases / "payload.json").write_bytes(orjson.dumps(PAYLOAD))
    (target / "devices" / "topicdev.test.yaml").write_text(
        "version: 1\nmapping: topicdev\ncases:\n"
        f"  - {{name: on its topic, input: topicdev/payload.json, topic: {TOPIC},\n"
        "     expect: topicdev/expected.json}\n"
        "  - {name: no topic, input: topicdev/payload.json, errors: [device]}\n")
    return target


def device_ref(value: str) -> str:
    return f"Device/{registry_id('Device', Identifier(DEVICE_SYSTEM, value))}"


def test_the_mapping_reads_the_topic_as_meta_and_refuses_without_it(tmp_path: Path) -> None:
    root = mappings_with_topic_device(tmp_path)
    mapping_set = load_mapping_set(root)
    found = mapping_set.extract("topicdev", PAYLOAD, mqtt_meta(TOPIC))
    (m,) = found.measurements
    assert m.device == Identifier(DEVICE_SYSTEM, "cuff-7") and m.values == {"value": 71}
    assert mapping_set.with_meta(mqtt_meta(TOPIC)).extract("topicdev", PAYLOAD) \
        .measurements[0].device == m.device  # as a connector calls it
    bare = mapping_set.extract("topicdev", PAYLOAD)  # over HTTP: no topic, no device
    assert not bare.measurements
    assert [e.location for e in bare.errors] == ["readings[0]"]
    assert "device" in bare.errors[0].message


def test_golden_cases_and_convert_take_a_topic(tmp_path: Path) -> None:
    root = mappings_with_topic_device(tmp_path)
    made = run_hub("mappings", "test", str(root / "devices" / "topicdev.test.yaml"), "--update")
    assert made.returncode == 0, made.stdout + made.stderr
    bundle = orjson.loads((root / "devices" / "topicdev" / "expected.json").read_bytes())
    (obs,) = [e["resource"] for e in bundle["entry"]]
    assert obs["device"] == {"reference": device_ref("cuff-7")}
    again = run_hub("mappings", "test", str(root / "devices" / "topicdev.test.yaml"))
    assert again.returncode == 0, again.stdout + again.stderr

    payload = tmp_path / "payload.json"
    payload.write_bytes(orjson.dumps(PAYLOAD))
    mapping = str(root / "devices" / "topicdev.yaml")
    converted = run_hub("convert", "--mapping", mapping, str(payload),
                        "--topic", "rpm/cuff-8/vitals")
    assert converted.returncode == 0, converted.stderr
    (obs,) = [e["resource"] for e in orjson.loads(converted.stdout)["entry"]]
    assert obs["device"] == {"reference": device_ref("cuff-8")}
    refused = run_hub("convert", "--mapping", mapping, str(payload))
    assert refused.returncode == 1 and "device" in refused.stderr


# An IoT Hub event whose device id is not in the message: devices that publish straight to a
# broker name themselves in the topic (rpm/<device>/vitals here).
IOMT_EVENT = {"Body": {"heartRate": 71, "endDate": "2026-03-01T08:00:00Z"}, "Properties": {}}
IOMT_SYSTEM = "urn:iomt-fhir-hub:iomt:device"


def iomt_reading_the_topic(mappings: Path) -> Path:
    """``mappings`` with the iomt mapping falling back to the topic's second level for the
    device id (what a site does for devices that publish to the hub's broker directly)."""
    path = mappings / "devices" / "iomt.yaml"
    text = path.read_text()
    anchor = 'root.SystemProperties."iothub-connection-device-id"'
    assert anchor in text
    path.write_text(text.replace(anchor, f"{anchor} || meta.topic_levels[1]"))
    return mappings


@pytest.mark.parametrize("meta", [mqtt_meta(TOPIC), None], ids=["topic", "none"])
def test_the_pipeline_reads_meta_stored_with_the_raw_message(
        db_url: str, tmp_path: Path, meta: dict[str, object] | None) -> None:
    mappings = iomt_reading_the_topic(mappings_with_topic_device(tmp_path))
    hub = Hub.build(make_settings(db_url, mappings_dir=mappings), Telemetry.disabled())
    try:
        receipt = inbox.receive(hub.engine, source="iomt", channel="mqtt",
                                content_type="application/json",
                                body=orjson.dumps(IOMT_EVENT), meta=meta)
        with hub.engine.connect() as conn:
            (raw,) = inbox.claim(conn, 10, lock=False)
        assert raw.id == receipt.message_id and raw.meta == meta  # kept with the raw message
        drain(hub.pipeline, hub.engine, 8)
        message = inbox.get(hub.engine, receipt.message_id)
        assert message is not None
        if meta is None:  # over HTTP the same event names no device: refused, with the reason
            assert message["status"] == "failed" and "device" in (message["error"] or "")
            return
        # the device was read from the topic: its readings wait for an assignment to a patient
        assert (message["status"], message["error"]) == ("quarantined",
                                                         "items[0]: unassigned device")
        assign_device(hub.engine, Identifier(IOMT_SYSTEM, "cuff-7"),
                      Identifier("urn:example:patient", "p-1"),
                      datetime(2026, 3, 1, tzinfo=UTC))
        inbox.requeue(hub.engine, status=inbox.STATUS_QUARANTINED)
        drain(hub.pipeline, hub.engine, 8)  # processed again: its meta read back from the row
        message = inbox.get(hub.engine, receipt.message_id)
        assert message is not None and message["status"] == "processed", message["error"]
        (ref,) = [r for r in message["resources"] if r.startswith("Observation/")]
        with hub.engine.connect() as conn:
            obs = resources.read(conn, "Observation", ref.split("/", 1)[1])
        assert obs is not None
        expected = registry_id("Device", Identifier(IOMT_SYSTEM, "cuff-7"))
        assert obs["device"] == {"reference": f"Device/{expected}"}
    finally:
        hub.engine.dispose()
