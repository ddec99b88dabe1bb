"""``/ready`` names each running channel's state, against a real broker and a real listener.

The hub's own Mosquitto is stopped under a running MQTT channel: ``/ready`` stays 200 (HTTP
intake still works) but says ``degraded`` with the channel ``connecting``, and ``ready`` again
once the broker is back. The MLLP listener reports ``listening`` with its port, then ``stopped``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.channels.mllp import MllpChannel, MllpThread
from hub.channels.mqtt import MqttChannel
from hub.channels.mqtt_config import MqttFile
from hub.runtime import Hub
from tests.mqtt.conftest import OwnBroker

pytestmark = pytest.mark.mqtt


def ready_until(client: TestClient, predicate: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/ready")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, f"/ready never matched; last: {body}"
        time.sleep(0.05)


def test_ready_follows_the_mqtt_broker_going_away_and_coming_back(
    hub: Hub, own_broker: OwnBroker
) -> None:
    cfg = MqttFile.model_validate({
        "version": 1,
        "broker": {"host": "127.0.0.1", "port": own_broker.port, "client_id": "ready-test",
                   "reconnect_min_secs": 1, "reconnect_max_secs": 1},
        "subscriptions": [{"filter": "devices/+/readings", "source": "hub"}]})
    channel = MqttChannel(hub, cfg)
    with TestClient(create_app(hub, inline_worker=False)) as client:
        assert client.get("/ready").json()["channels"] == {}  # nothing started yet
        channel.start()
        try:
            up = ready_until(client, lambda b: b["channels"]["mqtt"]["subscribed"])
            assert up["status"] == "ready"
            assert up["channels"]["mqtt"] == {"state": "connected", "subscribed": True}

            own_broker.stop()
            down = ready_until(client, lambda b: b["status"] == "degraded")
            assert down["channels"]["mqtt"] == {"state": "connecting", "subscribed": False}

            own_broker.start()
            back = ready_until(client, lambda b: b["status"] == "ready")
            assert back["channels"]["mqtt"]["state"] == "connected"
        finally:
            channel.stop()
        stopped = client.get("/ready").json()
        assert stopped["status"] == "degraded"
        assert stopped["channels"]["mqtt"]["state"] == "stopped"


def test_ready_names_the_mllp_listener_and_its_port(hub: Hub) -> None:
    runner = MllpThread(MllpChannel(hub, host="127.0.0.1", port=0))
    port = runner.start()
    with TestClient(create_app(hub, inline_worker=False)) as client:
        try:
            body = client.get("/ready").json()
            assert body["status"] == "ready"
            assert body["channels"]["mllp"] == {"state": "listening", "port": port}
        finally:
            runner.stop()
        body = client.get("/ready").json()
        assert (body["status"], body["channels"]["mllp"]["state"]) == ("degraded", "stopped")
