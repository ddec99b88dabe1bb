"""``/registry`` over HTTP (SQLite and PostgreSQL): scope, registration, assignments (409 on
overlap, as an OperationOutcome), unassign, listing, and readings posted through /ingest that wait
in quarantine until the assignment that covers them is added."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.operationoutcome import OperationOutcome

from hub.api.app import create_app
from hub.runtime import Hub
from hub.store import api_keys, inbox
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth
from tests.readings import BASE_TIME, canonical

CUFF = {"system": "urn:iomt-fhir-hub:device", "value": "cuff-42"}
ANN = {"system": "urn:iomt-fhir-hub:patient", "value": "ann"}
BOB = {"system": "urn:iomt-fhir-hub:patient", "value": "bob"}


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub, inline_worker=False)) as c:
        yield c


@pytest.fixture
def admin_key(hub: Hub) -> dict[str, str]:
    return auth(api_keys.create(hub.engine, TEST_SECRET, "ward-admin", ["registry"]))


def iso(delta: timedelta = timedelta(0)) -> str:
    return (BASE_TIME + delta).isoformat()


def outcome(response) -> str:
    body = response.json()
    OperationOutcome.model_validate(body)
    return str(body["issue"][0]["diagnostics"])


def register_all(client: TestClient, key: dict[str, str]) -> None:
    assert client.post("/registry/devices", json={"identifier": [CUFF]},
                       headers=key).status_code == 201
    for patient in (ANN, BOB):
        assert client.post("/registry/patients", json={"identifier": [patient]},
                           headers=key).status_code == 201


def test_registry_needs_the_registry_scope(client: TestClient, hub: Hub) -> None:
    vendor = auth(api_keys.create(hub.engine, TEST_SECRET, "vendor", ["hub", "fhir"]))
    for method, path in [("post", "/registry/devices"), ("post", "/registry/assignments"),
                         ("get", "/registry/assignments")]:
        assert getattr(client, method)(path).status_code == 401
        denied = client.request(method.upper(), path, headers=vendor,
                                json={"identifier": [CUFF]})
        assert denied.status_code == 403 and "registry" in outcome(denied)
    everything = auth(api_keys.create(hub.engine, TEST_SECRET, "root", ["*"]))
    assert client.get("/registry/assignments", headers=everything).status_code == 200


def test_register_a_device_then_update_it(client: TestClient, admin_key: dict[str, str]) -> None:
    body = {"identifier": [CUFF], "model": "BP-200", "manufacturer": "Acme",
            "type": {"system": "urn:iso:std:iso:11073:10101", "code": "528391"}}
    made = client.post("/registry/devices", json=body, headers=admin_key)
    assert made.status_code == 201, made.text
    device = made.json()["device"]
    Device.model_validate(device)
    assert made.headers["location"].endswith(f"/fhir/Device/{device['id']}")
    again = client.post("/registry/devices", json={"identifier": [CUFF], "model": "BP-210"},
                        headers=admin_key)
    assert again.status_code == 200 and again.json()["device"]["id"] == device["id"]
    assert again.json()["device"]["modelNumber"] == "BP-210"
    read = client.get(f"/fhir/Device/{device['id']}", headers=admin_key)
    assert read.status_code == 200 and read.json()["manufacturer"] == "Acme"


def test_bad_bodies_are_400_operation_outcomes(client: TestClient,
                                               admin_key: dict[str, str]) -> None:
    register_all(client, admin_key)
    for path, body in [
        ("/registry/devices", {"identifier": []}),
        ("/registry/devices", {"identifier": [{"system": "", "value": "x"}]}),
        ("/registry/patients", {"identifier": [ANN], "gender": "robot"}),
        ("/registry/assignments", {"device": CUFF, "patient": ANN,
                                   "start": "2026-11-20T08:00:00"}),  # no offset
        ("/registry/assignments", {"device": CUFF, "patient": ANN, "start": iso(),
                                   "end": iso(timedelta(hours=-1))}),
        ("/registry/assignments", {"device": CUFF, "patient": ANN, "start": iso(), "x": 1}),
    ]:
        refused = client.post(path, json=body, headers=admin_key)
        assert refused.status_code == 400, (path, body, refused.text)
        outcome(refused)
    bad_token = client.get("/registry/assignments?device=no-bar", headers=admin_key)
    assert bad_token.status_code == 400 and "system|value" in outcome(bad_token)


def test_assign_overlap_unassign_and_list(client: TestClient, admin_key: dict[str, str]) -> None:
    unknown = client.post("/registry/assignments", headers=admin_key, json={
        "device": CUFF, "patient": ANN, "start": iso()})
    assert unknown.status_code == 404 and "register it first" in outcome(unknown)
    register_all(client, admin_key)
    made = client.post("/registry/assignments", headers=admin_key, json={
        "device": CUFF, "patient": ANN, "start": iso()})
    assert made.status_code == 201, made.text
    first = made.json()
    assert first["end"] is None and first["start"] == "2026-11-20T08:00:00Z"
    assert first["patientIdentifier"] == [ANN]
    clash = client.post("/registry/assignments", headers=admin_key, json={
        "device": CUFF, "patient": BOB, "start": iso(timedelta(hours=2))})
    assert clash.status_code == 409
    assert clash.json()["issue"][0]["code"] == "conflict"
    assert f"assignment {first['id']}" in outcome(clash) and "end that assignment" in outcome(clash)

    ended = client.post("/registry/unassign", headers=admin_key, json={
        "device": CUFF, "at": iso(timedelta(hours=2))})
    assert ended.status_code == 200 and ended.json()["end"] == "2026-11-20T10:00:00Z"
    moved = client.post("/registry/assignments", headers=admin_key, json={
        "device": CUFF, "patient": BOB, "start": iso(timedelta(hours=2))})
    assert moved.status_code == 201
    nothing = client.post("/registry/unassign", headers=admin_key, json={
        "device": CUFF, "at": iso(timedelta(hours=-5))})
    assert nothing.status_code == 404

    listed = client.get("/registry/assignments", headers=admin_key,
                        params={"device": f"{CUFF['system']}|{CUFF['value']}"}).json()
    assert [(a["patientIdentifier"][0]["value"], a["end"]) for a in listed["assignments"]] == [
        ("ann", "2026-11-20T10:00:00Z"), ("bob", None)]
    at = client.get("/registry/assignments", headers=admin_key,
                    params={"at": iso(timedelta(hours=1))}).json()["assignments"]
    assert [a["id"] for a in at] == [first["id"]]
    by_patient = client.get("/registry/assignments", headers=admin_key,
                            params={"patient": f"{BOB['system']}|{BOB['value']}"}).json()
    assert [a["id"] for a in by_patient["assignments"]] == [moved.json()["id"]]


def test_readings_posted_before_the_assignment_wait_and_are_released(
        client: TestClient, hub: Hub, admin_key: dict[str, str], api_key: str) -> None:
    posted = client.post("/ingest/hub", json=canonical(2, device="cuff-42", patient=None),
                         headers=auth(api_key))
    assert posted.status_code == 202
    message = posted.json()["messageId"]
    drain(hub.pipeline, hub.engine, 10)
    assert client.get(f"/messages/{message}", headers=auth(api_key)).json()["status"] == \
        "quarantined"
    # create mode registered the cuff on first sight; the message waits for the cuff's
    # assignment, so registering the patient releases nothing (it stays in quarantine)
    registered = client.post("/registry/patients", json={"identifier": [ANN], "family": "Doe"},
                             headers=admin_key)
    assert registered.status_code == 201 and registered.json()["released"] == 0
    drain(hub.pipeline, hub.engine, 10)
    assert inbox.get(hub.engine, message)["status"] == "quarantined"
    made = client.post("/registry/assignments", headers=admin_key, json={
        "device": CUFF, "patient": ANN, "start": iso(timedelta(days=-1))})
    assert made.status_code == 201 and made.json()["released"] == 1
    drain(hub.pipeline, hub.engine, 10)
    lineage = client.get(f"/messages/{message}", headers=auth(api_key)).json()
    assert lineage["status"] == "processed"
    observations = [r for r in lineage["resources"] if r.startswith("Observation/")]
    assert len(observations) == 2
    patient = made.json()["patient"]
    found = client.get("/fhir/Observation", params={"patient": patient.split("/")[1]},
                       headers=auth(api_key)).json()
    assert sorted(f"Observation/{e['resource']['id']}" for e in found["entry"]) == \
        sorted(observations)
