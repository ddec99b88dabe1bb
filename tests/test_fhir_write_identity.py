"""Patients and Devices written through the FHIR API are bound in the identity registry, so a
later reading naming one of their identifiers lands on that resource (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.api.app import create_app
from hub.contracts import Identifier
from hub.runtime import Hub
from hub.store import api_keys, inbox, registry
from hub.store.models import Resource
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth, make_settings
from tests.readings import canonical

MRN = "urn:oid:2.16.840.1.113883.19.5"
SERIAL = "urn:acme:serial"


@pytest.fixture
def key(hub: Hub) -> dict[str, str]:
    return auth(api_keys.create(hub.engine, TEST_SECRET, "ehr-team", ["hub", "fhir"]))


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub, inline_worker=False)) as c:
        yield c


def reading(device: str = "cuff-1", patient: str | None = None,
            device_system: str = "urn:iomt-fhir-hub:device") -> dict[str, Any]:
    body = canonical(1, device=device, patient=None)
    body["device"]["system"] = device_system
    if patient is not None:
        body["patient"] = {"system": MRN, "id": patient}
    return body


def post(hub: Hub, body: dict[str, Any]) -> str:
    message_id = inbox.receive(hub.engine, source="hub", channel="test",
                               content_type="application/json",
                               body=orjson.dumps(body)).message_id
    drain(hub.pipeline, hub.engine, 10)
    return message_id


def observations(hub: Hub) -> list[dict[str, Any]]:
    with hub.engine.connect() as conn:
        return [orjson.loads(c) for c in conn.execute(
            select(Resource.content).where(Resource.res_type == "Observation")).scalars()]


def put(client: TestClient, key: dict[str, str], res_type: str, res_id: str,
        identifier: tuple[str, str]) -> dict[str, Any]:
    body = {"resourceType": res_type, "id": res_id,
            "identifier": [{"system": identifier[0], "value": identifier[1]}]}
    answer = client.put(f"/fhir/{res_type}/{res_id}", json=body,
                        headers={**key, "Content-Type": "application/fhir+json"})
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.headers)


def test_a_put_patient_and_device_receive_the_readings_naming_them(
        client: TestClient, hub: Hub, key: dict[str, str]) -> None:
    put(client, key, "Patient", "ehr-1", (MRN, "MRN-9"))
    put(client, key, "Device", "asset-7", (SERIAL, "AC-77"))
    post(hub, reading(device="AC-77", device_system=SERIAL, patient="MRN-9"))
    (obs,) = observations(hub)
    assert obs["subject"]["reference"] == "Patient/ehr-1"
    assert obs["device"]["reference"] == "Device/asset-7"
    with hub.engine.connect() as conn:  # no second Patient/Device was registered on sight
        assert registry.lookup(conn, "Patient", Identifier(MRN, "MRN-9")) == "ehr-1"
        count = conn.execute(select(Resource.res_id).where(
            Resource.res_type.in_(["Patient", "Device"]))).scalars().all()
    assert sorted(count) == ["asset-7", "ehr-1"]


def test_a_created_patient_receives_the_readings_naming_it(
        client: TestClient, hub: Hub, key: dict[str, str]) -> None:
    created = client.post("/fhir/Patient", headers={**key, "Content-Type": "application/fhir+json"},
                          json={"resourceType": "Patient",
                                "identifier": [{"system": MRN, "value": "MRN-4"}]})
    assert created.status_code == 201, created.text
    post(hub, reading(patient="MRN-4"))
    (obs,) = observations(hub)
    assert obs["subject"]["reference"] == f"Patient/{created.json()['id']}"


def test_a_put_does_not_take_an_identifier_bound_elsewhere_and_says_so(
        client: TestClient, hub: Hub, key: dict[str, str]) -> None:
    post(hub, reading(patient="MRN-7"))  # registered on first sight (create mode)
    (first,) = observations(hub)
    headers = put(client, key, "Patient", "ehr-2", (MRN, "MRN-7"))
    lineage = client.get(f"/messages/{headers['x-message-id']}", headers=key).json()
    assert lineage["status"] == "processed", lineage
    assert lineage["notes"] and "identifier[0] is already bound to Patient/" in lineage["notes"], \
        lineage
    assert "MRN-7" not in lineage["notes"]
    body = reading(patient="MRN-7")
    body["readings"][0]["time"] = "2026-11-21T08:00:00Z"
    post(hub, body)
    assert {o["subject"]["reference"] for o in observations(hub)} == {
        first["subject"]["reference"]}


def test_a_put_patient_releases_readings_that_waited_for_it_in_lookup_mode(
        db_url: str) -> None:
    hub = Hub.build(make_settings(db_url, identity_modes={"hub": "lookup"}), Telemetry.disabled())
    try:
        key = auth(api_keys.create(hub.engine, TEST_SECRET, "ehr", ["hub", "fhir"]))
        waiting = post(hub, reading(patient="MRN-3"))
        assert inbox.get(hub.engine, waiting)["status"] == "quarantined"
        with TestClient(create_app(hub, inline_worker=False)) as client:
            put(client, key, "Patient", "ehr-3", (MRN, "MRN-3"))
            put(client, key, "Device", "cuff-asset", ("urn:iomt-fhir-hub:device", "cuff-1"))
        drain(hub.pipeline, hub.engine, 10)
        assert inbox.get(hub.engine, waiting)["status"] == "processed"
        (obs,) = observations(hub)
        assert (obs["subject"]["reference"], obs["device"]["reference"]) == (
            "Patient/ehr-3", "Device/cuff-asset")
    finally:
        hub.engine.dispose()
