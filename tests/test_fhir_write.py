"""FHIR writes: create, conditional create (also 50 at once), PUT-as-create, batch, transaction.

Every write goes through the inbox and the real pipeline; the tests check the answers, the store,
the inbox row (status, lineage) and that every resource returned validates with R4B.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.api.app import create_app
from hub.api.fhir_write import wait_processed
from hub.runtime import Hub
from hub.store import api_keys, inbox
from hub.store.models import InboundMessage, Resource
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth
from tests.readings import canonical
from tests.test_fhir_read import ids, search, valid

IDENT = "http://hospital.example.org/fhir/sid/obs"
CANARY = "CANARY-PHI-4711"


@pytest.fixture
def key(hub: Hub) -> str:
    return api_keys.create(hub.engine, TEST_SECRET, "ehr-team", ["hub", "fhir"])


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub, inline_worker=False)) as c:
        yield c


def observation(value: str = "obs-1", hr: float = 72, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "identifier": [{"system": IDENT, "value": value}],
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p-1"},
        "effectiveDateTime": "2026-11-20T09:00:00Z",
        "valueQuantity": {"value": hr, "unit": "beats/minute", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
    }
    body.update(extra)
    return body


def rows(hub: Hub, res_type: str = "Observation") -> list[Any]:
    """Stored resources of a type; for Observations only heart rates (what these tests post:
    rules may derive further Observations, with their own codes)."""
    query = (select(Resource.res_id, Resource.version_id, Resource.content)
             .where(Resource.res_type == res_type).order_by(Resource.res_id))
    if res_type == "Observation":
        query = query.where(Resource.code == "8867-4")
    with hub.engine.connect() as conn:
        return list(conn.execute(query).all())


def messages(hub: Hub) -> list[Any]:
    with hub.engine.connect() as conn:
        return list(conn.execute(select(InboundMessage.id, InboundMessage.status,
                                        InboundMessage.error, InboundMessage.source,
                                        InboundMessage.channel)).all())


def outcome_of(answer: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = valid(answer.json())
    assert body["resourceType"] == "OperationOutcome"
    if code:
        assert body["issue"][0]["code"] == code
    return body


# --- create ---------------------------------------------------------------------------------

def test_create_is_durable_processed_and_answered_201(hub: Hub, client: TestClient,
                                                      key: str) -> None:
    answer = client.post("/fhir/Observation", json=observation(), headers=auth(key))
    assert answer.status_code == 201, answer.text
    created = valid(answer.json())
    assert created["meta"]["versionId"] == "1"
    assert answer.headers["location"].endswith(f"/fhir/Observation/{created['id']}/_history/1")
    assert answer.headers["etag"] == 'W/"1"'
    message_id = answer.headers["x-message-id"]
    lineage = client.get(f"/messages/{message_id}", headers=auth(key)).json()
    assert lineage["status"] == "processed" and lineage["source"] == "fhir"
    assert lineage["channel"] == "fhir"
    assert lineage["resources"][0] == f"Observation/{created['id']}"  # then what rules derived
    read = client.get(f"/fhir/Observation/{created['id']}", headers=auth(key))
    assert valid(read.json())["valueQuantity"]["value"] == 72
    # searchable like any reading
    assert ids(search(client, key, "Observation?patient=p-1&code=8867-4")) == [created["id"]]


def test_create_twice_is_one_resource(hub: Hub, client: TestClient, key: str) -> None:
    first = client.post("/fhir/Observation", json=observation(), headers=auth(key))
    again = client.post("/fhir/Observation", json=observation(), headers=auth(key))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    # same identifier, different body (e.g. the same reading from a backfill): still one resource
    other = client.post("/fhir/Observation", json=observation(hr=73), headers=auth(key))
    assert other.status_code == 200 and other.json()["id"] == first.json()["id"]
    assert [(r.res_id, r.version_id) for r in rows(hub)] == [(first.json()["id"], 2)]


def test_create_without_identifier_gets_a_deterministic_id(
    hub: Hub, client: TestClient, key: str
) -> None:
    body = observation()
    del body["identifier"]
    first = client.post("/fhir/Observation", json=body, headers=auth(key))
    again = client.post("/fhir/Observation", json=body,
                        headers={**auth(key), "Idempotency-Key": "retry-2"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len(rows(hub)) == 1


def test_invalid_create_is_400_with_location_and_kept_as_failed(
    hub: Hub, client: TestClient, key: str
) -> None:
    body = observation()
    body["valueQuantity"]["value"] = CANARY
    outcome = outcome_of(client.post("/fhir/Observation", json=body, headers=auth(key)),
                         400, "invalid")
    assert outcome["issue"][0]["expression"] == ["Observation.valueQuantity.value"]
    assert CANARY not in str(outcome)
    [row] = messages(hub)
    assert row.status == "failed" and "Observation.valueQuantity.value" in row.error
    assert CANARY not in row.error
    assert rows(hub) == []
    # a status outside the required binding, and a missing element
    bad_status = outcome_of(client.post("/fhir/Observation", json=observation(status="done"),
                                        headers=auth(key)), 400)
    assert bad_status["issue"][0]["expression"] == ["Observation.status"]
    missing = observation()
    del missing["code"]
    assert outcome_of(client.post("/fhir/Observation", json=missing, headers=auth(key)),
                      400)["issue"][0]["expression"] == ["Observation.code"]


def test_create_refusals(hub: Hub, client: TestClient, key: str) -> None:
    headers = {**auth(key), "Content-Type": "application/fhir+json"}
    outcome_of(client.post("/fhir/Observation", content=b'{"resourceType": ', headers=headers),
               400, "invalid")
    outcome_of(client.post("/fhir/Observation", content=b"<Observation/>",
                           headers={**auth(key), "Content-Type": "application/fhir+xml"}),
               415, "not-supported")
    mismatch = outcome_of(client.post("/fhir/Patient", json=observation(), headers=auth(key)), 400)
    assert mismatch["issue"][0]["expression"] == ["resourceType"]
    outcome_of(client.post("/fhir/Encounter", json={"resourceType": "Encounter"},
                           headers=auth(key)), 404, "not-found")
    reader = api_keys.create(hub.engine, TEST_SECRET, "reader", ["hub"])
    outcome_of(client.post("/fhir/Observation", json=observation(), headers=auth(reader)),
               403, "forbidden")
    outcome_of(client.put("/fhir/Observation/x", json=observation(id="x"),
                          headers=auth(reader)), 403, "forbidden")
    assert rows(hub) == []


# --- PUT ------------------------------------------------------------------------------------

def test_put_twice_is_idempotent_and_a_change_is_a_new_version(
    hub: Hub, client: TestClient, key: str
) -> None:
    a, b = observation(id="dest-1"), observation(id="dest-1", hr=90)
    first = client.put("/fhir/Observation/dest-1", json=a, headers=auth(key))
    again = client.put("/fhir/Observation/dest-1", json=a, headers=auth(key))
    assert (first.status_code, again.status_code) == (201, 200)
    assert valid(again.json())["meta"]["versionId"] == "1"
    assert [(r.res_id, r.version_id) for r in rows(hub)] == [("dest-1", 1)]
    changed = client.put("/fhir/Observation/dest-1", json=b, headers=auth(key))
    assert changed.status_code == 200 and changed.headers["etag"] == 'W/"2"'
    back = client.put("/fhir/Observation/dest-1", json=a, headers=auth(key))  # A, B, A ends at A
    assert back.headers["etag"] == 'W/"3"' and back.json()["valueQuantity"]["value"] == 72
    assert [(r.res_id, r.version_id) for r in rows(hub)] == [("dest-1", 3)]


def test_prefer_return_minimal_has_no_body(hub: Hub, client: TestClient, key: str) -> None:
    answer = client.put("/fhir/Observation/dest-1", json=observation(id="dest-1"),
                        headers={**auth(key), "Prefer": "return=minimal"})
    assert answer.status_code == 201 and answer.content == b""
    assert answer.headers["location"].endswith("/fhir/Observation/dest-1/_history/1")


def test_put_needs_the_url_id_in_the_body(hub: Hub, client: TestClient, key: str) -> None:
    for body in (observation(), observation(id="other")):
        outcome = outcome_of(client.put("/fhir/Observation/dest-1", json=body, headers=auth(key)),
                             400)
        assert outcome["issue"][0]["expression"] == ["Observation.id"]
    outcome_of(client.put("/fhir/Observation/dest-1", json=observation(id="dest-1"),
                          headers={**auth(key), "If-Match": 'W/"1"'}), 400, "not-supported")
    assert rows(hub) == []


@pytest.mark.parametrize("resource", [
    {"resourceType": "Patient", "id": "p-1",
     "identifier": [{"system": "urn:mrn", "value": "12345"}], "gender": "female"},
    {"resourceType": "Device", "id": "d-1", "status": "active",
     "identifier": [{"system": "urn:serial", "value": "SN-1"}]},
    {"resourceType": "Flag", "id": "f-1", "status": "active", "code": {"text": "review"},
     "subject": {"reference": "Patient/p-1"}},
    {"resourceType": "Communication", "id": "c-1", "status": "completed",
     "subject": {"reference": "Patient/p-1"}, "sent": "2026-11-20T09:00:00Z"},
])
def test_put_every_served_type(hub: Hub, client: TestClient, key: str,
                               resource: dict[str, Any]) -> None:
    rtype, rid = resource["resourceType"], resource["id"]
    answer = client.put(f"/fhir/{rtype}/{rid}", json=resource, headers=auth(key))
    assert answer.status_code == 201, answer.text
    assert valid(answer.json())["id"] == rid
    assert ids(search(client, key, f"{rtype}?_id={rid}")) == [rid]


def test_a_replayed_put_message_is_processed_the_same_way(
    hub: Hub, client: TestClient, key: str
) -> None:
    answer = client.put("/fhir/Observation/dest-1", json=observation(id="dest-1"),
                        headers=auth(key))
    message_id = answer.headers["x-message-id"]
    assert inbox.requeue(hub.engine, status="processed", message_ids=[message_id]) == 1
    drain(hub.pipeline, hub.engine, 8)
    assert [(r.res_id, r.version_id) for r in rows(hub)] == [("dest-1", 1)]


# --- conditional create ---------------------------------------------------------------------

def test_conditional_create(hub: Hub, client: TestClient, key: str) -> None:
    headers = {**auth(key), "If-None-Exist": f"identifier={IDENT}|obs-7"}
    first = client.post("/fhir/Observation", json=observation("obs-7"), headers=headers)
    assert first.status_code == 201
    # a match is answered 200 with the resource as it is: not updated
    again = client.post("/fhir/Observation", json=observation("obs-7", hr=99), headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["valueQuantity"]["value"] == 72
    assert [r.version_id for r in rows(hub)] == [1]
    outcome_of(client.post("/fhir/Observation", json=observation(),
                           headers={**auth(key), "If-None-Exist": "code=8867-4"}),
               400, "not-supported")


def test_conditional_create_finds_resources_the_hub_made(
    hub: Hub, client: TestClient, key: str
) -> None:
    client.post("/ingest/hub", json=canonical(1), headers=auth(key))
    drain(hub.pipeline, hub.engine, 8)
    [made] = [e["resource"] for e in search(client, key, "Observation?code=8867-4")["entry"]]
    ident = made["identifier"][0]  # urn:ietf:rfc:3986 | urn:uuid:<id>
    answer = client.post(
        "/fhir/Observation", json=observation(),
        headers={**auth(key), "If-None-Exist": f"identifier={ident['system']}|{ident['value']}"})
    assert answer.status_code == 200
    assert answer.json()["id"] == made["id"] and answer.json()["meta"]["versionId"] == "1"
    lineage = client.get(f"/messages/{answer.headers['x-message-id']}", headers=auth(key)).json()
    assert lineage["status"] == "processed"
    assert lineage["resources"] == [f"Observation/{made['id']}"]


@pytest.mark.parametrize("identical", [True, False])
def test_fifty_parallel_conditional_creates_make_exactly_one_resource(
    hub: Hub, client: TestClient, key: str, identical: bool
) -> None:
    headers = {**auth(key), "If-None-Exist": f"identifier={IDENT}|obs-50"}
    statuses: list[int] = []
    made: list[str] = []
    start = threading.Barrier(50)
    lock = threading.Lock()

    def post(n: int) -> None:
        body = observation("obs-50", hr=72 if identical else 60 + n)
        start.wait()
        answer = client.post("/fhir/Observation", json=body, headers=headers)
        with lock:
            statuses.append(answer.status_code)
            made.append(answer.json().get("id", answer.text))

    threads = [threading.Thread(target=post, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert Counter(statuses) == {201: 1, 200: 49}, Counter(statuses)
    assert len(set(made)) == 1
    assert [r.version_id for r in rows(hub)] == [1]


# --- batch and transaction ------------------------------------------------------------------

def entry(method: str, url: str, resource: dict[str, Any], **request: str) -> dict[str, Any]:
    return {"request": {"method": method, "url": url, **request}, "resource": resource}


def test_batch_answers_each_entry_and_goes_on_past_bad_ones(
    hub: Hub, client: TestClient, key: str
) -> None:
    client.put("/fhir/Observation/dest-1", json=observation("obs-1", id="dest-1"),
               headers=auth(key))
    bad = observation("obs-3", status="done")
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        entry("PUT", "Observation/dest-1", observation("obs-1", id="dest-1")),  # unchanged
        entry("POST", "Observation", observation("obs-2")),
        entry("POST", "Observation", bad),
        entry("DELETE", "Observation/dest-1", observation("obs-4")),
        entry("POST", "Observation", observation("obs-5"),
              ifNoneExist=f"identifier={IDENT}|obs-5"),
        entry("PUT", "Patient/p-1", {"resourceType": "Patient", "id": "p-1"}),
    ]}
    answer = client.post("/fhir", json=bundle, headers=auth(key))
    assert answer.status_code == 200, answer.text
    result = valid(answer.json())
    assert result["type"] == "batch-response"
    status = [e["response"]["status"] for e in result["entry"]]
    assert status == ["200 OK", "201 Created", "400 Bad Request", "400 Bad Request",
                      "201 Created", "201 Created"]
    assert result["entry"][0]["response"]["location"] == "Observation/dest-1/_history/1"
    problem = result["entry"][2]["response"]["outcome"]["issue"][0]
    assert problem["expression"] == ["entry[2].resource.status"]
    assert result["entry"][3]["response"]["outcome"]["issue"][0]["code"] == "not-supported"
    assert len(rows(hub)) == 3 and len(rows(hub, "Patient")) == 1
    lineage = client.get(f"/messages/{answer.headers['x-message-id']}", headers=auth(key)).json()
    assert lineage["status"] == "partial" and "entry[2].resource.status" in lineage["error"]
    # the same batch again: nothing new
    repeat = valid(client.post("/fhir", json=bundle, headers=auth(key)).json())
    assert [e["response"]["status"] for e in repeat["entry"]] == [
        "200 OK", "200 OK", "400 Bad Request", "400 Bad Request", "200 OK", "200 OK"]
    assert sorted(r.version_id for r in rows(hub)) == [1, 1, 1]


def test_bundle_conditional_create_leaves_an_existing_match_untouched(
    hub: Hub, client: TestClient, key: str
) -> None:
    """R4 conditional create (ifNoneExist): a stored match is answered 200 and not rewritten,
    even with other content; a Patient matches through the registry under the id it has."""
    pid = "http://hospital.example.org/fhir/sid/mrn"
    first = client.post("/fhir/Observation", json=observation("obs-7", hr=61), headers=auth(key))
    assert first.status_code == 201, first.text
    put = client.put("/fhir/Patient/p-9", headers=auth(key), json={
        "resourceType": "Patient", "id": "p-9", "identifier": [{"system": pid, "value": "M9"}],
        "birthDate": "1950-01-01"})
    assert put.status_code == 201, put.text
    for kind in ("batch", "transaction"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [
            entry("POST", "Observation", observation("obs-7", hr=99),
                  ifNoneExist=f"identifier={IDENT}|obs-7"),
            entry("POST", "Patient", {"resourceType": "Patient", "birthDate": "1999-09-09",
                                      "identifier": [{"system": pid, "value": "M9"}]},
                  ifNoneExist=f"identifier={pid}|M9"),
            entry("POST", "Observation", observation("obs-8", hr=70),
                  ifNoneExist=f"identifier={IDENT}|obs-8"),
        ]}
        answer = client.post("/fhir", json=bundle, headers=auth(key))
        assert answer.status_code == 200, answer.text
        result = valid(answer.json())["entry"]
        assert [e["response"]["status"] for e in result][:2] == ["200 OK", "200 OK"], result
        assert result[1]["response"]["location"].startswith("Patient/p-9/_history/1")
        lineage = client.get(f"/messages/{answer.headers['x-message-id']}",
                             headers=auth(key)).json()
        assert lineage["status"] == "processed"
        assert "Patient/p-9" in lineage["resources"]
    stored = {r.res_id: r for r in rows(hub)}
    kept = stored[first.json()["id"]]
    assert kept.version_id == 1 and orjson.loads(kept.content)["valueQuantity"]["value"] == 61
    assert len(stored) == 2  # obs-7 untouched, obs-8 created once (second time: its match)
    (patient,) = rows(hub, "Patient")
    assert (patient.res_id, patient.version_id) == ("p-9", 1)
    assert orjson.loads(patient.content)["birthDate"] == "1950-01-01"


def test_transaction_is_all_or_nothing(hub: Hub, client: TestClient, key: str) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("POST", "Observation", observation("obs-1")),
        entry("PUT", "Observation/dest-2", observation("obs-2", id="dest-2")),
        entry("POST", "Observation", observation("obs-3", effectiveDateTime=CANARY)),
    ]}
    outcome = outcome_of(client.post("/fhir", json=bundle, headers=auth(key)), 400, "invalid")
    assert outcome["issue"][0]["expression"] == ["entry[2].resource.effectiveDateTime"]
    assert CANARY not in str(outcome)
    assert rows(hub) == []
    [message] = messages(hub)
    assert message.status == "failed" and CANARY not in message.error
    # fixed, it goes through whole
    bundle["entry"][2] = entry("POST", "Observation", observation("obs-3"))
    answer = client.post("/fhir", json=bundle, headers=auth(key))
    assert answer.status_code == 200, answer.text
    result = valid(answer.json())
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created"] * 3
    assert len(rows(hub)) == 3


def test_transaction_resolves_references_between_entries(
    hub: Hub, client: TestClient, key: str
) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "77"}]}
    temporary = "urn:uuid:5d1a1c2e-0000-4000-8000-000000000001"
    obs = observation("obs-9", subject={"reference": temporary})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": temporary, **entry("POST", "Patient", patient)},
        entry("POST", "Observation", obs),
    ]}
    answer = client.post("/fhir", json=bundle, headers=auth(key))
    assert answer.status_code == 200, answer.text
    patient_ref = answer.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]
    found = search(client, key, f"Observation?patient={patient_ref}")
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["subject"]["reference"] == patient_ref
    assert ids(search(client, key, "Patient?identifier=urn:mrn|77")) == [patient_ref.split("/")[1]]


def test_bundle_refusals(hub: Hub, client: TestClient, key: str) -> None:
    outcome_of(client.post("/fhir", json=observation(), headers=auth(key)), 400)
    collection = {"resourceType": "Bundle", "type": "collection", "entry": []}
    assert outcome_of(client.post("/fhir", json=collection, headers=auth(key)),
                      400)["issue"][0]["expression"] == ["Bundle.type"]
    twice = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("PUT", "Observation/a", observation(id="a")),
        entry("PUT", "Observation/a", observation(id="a", hr=1)),
    ]}
    assert outcome_of(client.post("/fhir", json=twice, headers=auth(key)),
                      400)["issue"][0]["expression"] == ["entry[1].request"]
    wrong_url = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("PUT", "Patient/a", observation(id="a"))]}
    assert outcome_of(client.post("/fhir", json=wrong_url, headers=auth(key)),
                      400)["issue"][0]["expression"] == ["entry[0].request.url"]
    assert rows(hub) == []


# --- the deferred answer --------------------------------------------------------------------

def test_a_message_not_yet_processed_is_left_to_the_worker(hub: Hub) -> None:
    receipt = inbox.receive(hub.engine, source="fhir", channel="fhir",
                            content_type="application/fhir+json",
                            body=orjson.dumps(observation()))
    assert wait_processed(hub, receipt.message_id, timeout=0) is None  # → 202 Accepted
    assert drain(hub.pipeline, hub.engine, 8) == 1
    assert wait_processed(hub, receipt.message_id, timeout=0)["status"] == "processed"


def test_many_clients_and_types_never_double_count(hub: Hub, client: TestClient,
                                                   key: str) -> None:
    bodies = [observation(f"obs-{n % 5}") for n in range(20)]
    threads = [threading.Thread(target=client.post, args=("/fhir/Observation",),
                                kwargs={"json": copy.deepcopy(b), "headers": auth(key)})
               for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(rows(hub)) == 5
