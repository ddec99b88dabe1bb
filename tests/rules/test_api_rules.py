"""/rules: the program, per-patient overrides validated like rule files, explain; admin only."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.api.app import create_app
from hub.runtime import Hub
from hub.store import api_keys, inbox
from hub.store.models import RuleSchedule
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub, inline_worker=False)) as c:
        yield c


@pytest.fixture
def admin(hub: Hub) -> dict[str, str]:
    return auth(api_keys.create(hub.engine, TEST_SECRET, "admin", ["*"]))


def patient_id(hub: Hub, client: TestClient, admin: dict[str, str]) -> str:
    body = {"device": {"id": "cuff"}, "patient": {"id": "api-pat"},
            "readings": [{"type": "oxygen-saturation", "time": "2026-11-20T08:00:00Z",
                          "value": 97, "unit": "%"}]}
    inbox.receive(hub.engine, source="hub", channel="http", content_type="application/json",
                  body=orjson.dumps(body))
    drain(hub.pipeline, hub.engine, 10)
    found = client.get("/fhir/Patient", headers=admin).json()
    return str(found["entry"][0]["resource"]["id"])


def test_overrides_round_trip_and_are_validated(hub: Hub, client: TestClient,
                                                admin: dict[str, str]) -> None:
    pid = patient_id(hub, client, admin)
    listed = client.get("/rules", headers=admin).json()["rules"]
    assert {r["id"] for r in listed} >= {"spo2-low", "news2", "cgm-consensus"}
    assert all("version" in r and r["source"] for r in listed)

    bad = client.put(f"/rules/overrides/{pid}/spo2-low", headers=admin,
                     json={"consecutive": 0})
    assert bad.status_code == 422 and "consecutive" in bad.json()["issue"][0]["diagnostics"]
    assert client.put(f"/rules/overrides/{pid}/no-such-rule", headers=admin,
                      json={}).status_code == 404
    assert client.put("/rules/overrides/nobody/spo2-low", headers=admin,
                      json={"enabled": False}).status_code == 404

    ok = client.put(f"/rules/overrides/{pid}/medication-adherence", headers=admin,
                    json={"times": ["08:00", "20:00"]})
    assert ok.status_code == 200, ok.text
    assert ok.json()["effective"]["times"] == ["08:00", "20:00"]
    with hub.engine.connect() as conn:  # a time-based rule runs at the next tick
        scheduled = conn.execute(select(RuleSchedule.rule_id)
                                 .where(RuleSchedule.patient_id == pid)).scalars().all()
    assert "medication-adherence" in scheduled
    got = client.get(f"/rules/overrides/{pid}", headers=admin).json()
    assert got["overrides"] == {"medication-adherence": {"times": ["08:00", "20:00"]}}

    report = client.get(f"/rules/patients/{pid}", headers=admin).json()
    entry = next(r for r in report["rules"] if r["rule"] == "medication-adherence")
    assert entry["override"] == {"times": ["08:00", "20:00"]}

    assert client.delete(f"/rules/overrides/{pid}/medication-adherence",
                         headers=admin).status_code == 204
    assert client.delete(f"/rules/overrides/{pid}/medication-adherence",
                         headers=admin).status_code == 404


def test_override_from_a_stored_medication_request(hub: Hub, client: TestClient,
                                                   admin: dict[str, str]) -> None:
    pid = patient_id(hub, client, admin)
    from hub.store import resources
    from hub.store.db import write_tx
    request = {"resourceType": "MedicationRequest", "id": "mr-amlodipine", "status": "active",
               "intent": "order", "subject": {"reference": f"Patient/{pid}"},
               "medicationCodeableConcept": {"coding": [
                   {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]},
               "dosageInstruction": [{"timing": {"repeat": {"timeOfDay": ["09:00:00"]}}}]}
    with write_tx(hub.engine) as conn:
        resources.upsert(conn, [request], None)
    done = client.put(f"/rules/overrides/{pid}/medication-adherence/from-request/mr-amlodipine",
                      headers=admin)
    assert done.status_code == 200, done.text
    assert done.json()["override"] == {
        "times": ["09:00"], "medication": "http://www.nlm.nih.gov/research/umls/rxnorm|197361"}


def test_only_an_all_sources_key_may_touch_rules(hub: Hub, client: TestClient,
                                                 api_key: str) -> None:
    assert client.get("/rules", headers=auth(api_key)).status_code == 403
    assert client.get("/rules").status_code == 401


def test_an_override_merges_into_the_rule_and_explain_shows_the_result(
        hub: Hub, client: TestClient, admin: dict[str, str]) -> None:
    pid = patient_id(hub, client, admin)
    done = client.put(f"/rules/overrides/{pid}/bp-severe", headers=admin,
                      json={"any": [{"measure": "systolic", "at_or_above": 170}]})
    assert done.status_code == 200, done.text
    triggers = done.json()["effective"]["any"]
    assert [(t["measure"], t["at_or_above"], t["clear_at"]) for t in triggers] == [
        ("systolic", 170, 159), ("diastolic", 120, 99)]  # the diastolic trigger is kept
    assert list(done.json()["changes"]) == ["any"]
    bad = client.put(f"/rules/overrides/{pid}/bp-severe", headers=admin,
                     json={"any": [{"at_or_above": 170}]})
    assert bad.status_code == 422
    assert "any[0]: name the item to change by its key" in bad.json()["issue"][0]["diagnostics"]

    report = client.get(f"/rules/patients/{pid}", headers=admin).json()
    entry = next(r for r in report["rules"] if r["rule"] == "bp-severe")
    assert entry["override"] == {"any": [{"measure": "systolic", "at_or_above": 170}]}
    assert [t["at_or_above"] for t in entry["effective"]["any"]] == [170, 120]


def test_a_patients_time_zone_is_validated_stored_and_explained(
        hub: Hub, client: TestClient, admin: dict[str, str]) -> None:
    pid = patient_id(hub, client, admin)
    assert client.get(f"/rules/patients/{pid}/settings", headers=admin).json() == {
        "patient": pid, "settings": {}, "timezone": "UTC"}
    bad = client.put(f"/rules/patients/{pid}/settings", headers=admin,
                     json={"timezone": "Mars/Olympus"})
    assert bad.status_code == 422
    assert "timezone: Value error, 'Mars/Olympus' is not a known time zone" in \
        bad.json()["issue"][0]["diagnostics"]
    assert client.put(f"/rules/patients/{pid}/settings", headers=admin,
                      json={"zone": "UTC"}).status_code == 422
    assert client.put("/rules/patients/nobody/settings", headers=admin,
                      json={"timezone": "UTC"}).status_code == 404
    done = client.put(f"/rules/patients/{pid}/settings", headers=admin,
                      json={"timezone": "America/New_York"})
    assert done.status_code == 200, done.text
    assert client.get(f"/rules/patients/{pid}/settings", headers=admin).json()["timezone"] == \
        "America/New_York"
    with hub.engine.connect() as conn:  # every time-based rule recomputes its days
        scheduled = set(conn.execute(select(RuleSchedule.rule_id)
                                     .where(RuleSchedule.patient_id == pid)).scalars())
    assert {"rpm-days-with-data", "medication-adherence", "cgm-consensus"} <= scheduled
    assert client.get(f"/rules/patients/{pid}", headers=admin).json()["timezone"] == \
        "America/New_York"
    assert client.get(f"/rules/overrides/{pid}", headers=admin).json()["overrides"] == {}
    assert client.delete(f"/rules/patients/{pid}/settings", headers=admin).status_code == 204
    assert client.delete(f"/rules/patients/{pid}/settings", headers=admin).status_code == 404
    assert client.get(f"/rules/patients/{pid}", headers=admin).json()["timezone"] == \
        "UTC (the program's)"
