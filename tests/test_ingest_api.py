"""POST /ingest/{source}: durable intake, auth, limits, idempotency, errors as OperationOutcome."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.api.app import create_app
from hub.runtime import Hub
from hub.store import api_keys, inbox
from hub.store.models import InboundMessage, Resource
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth
from tests.readings import canonical


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub, inline_worker=False)) as c:
        yield c


def count(hub: Hub, model: type) -> int:
    with hub.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def assert_outcome(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    assert body["issue"][0]["severity"] == "error"
    assert body["issue"][0]["diagnostics"]
    return body


def test_ingest_is_durable_then_processed(hub: Hub, client: TestClient, api_key: str) -> None:
    answer = client.post("/ingest/hub", json=canonical(3), headers=auth(api_key))
    assert answer.status_code == 202
    message_id = answer.json()["messageId"]
    assert answer.headers["Location"] == f"/messages/{message_id}"
    # durable before processing: the raw bytes are stored and waiting
    assert inbox.get(hub.engine, message_id)["status"] == "received"
    assert drain(hub.pipeline, hub.engine, 10) == 1
    lineage = client.get(f"/messages/{message_id}", headers=auth(api_key)).json()
    assert lineage["status"] == "processed"
    observations = [r for r in lineage["resources"] if r.startswith("Observation/")]
    assert len(observations) == 3
    assert {r.split("/")[0] for r in lineage["resources"]} == {"Observation", "Patient", "Device"}
    assert count(hub, Resource) == 5


def test_repeat_with_idempotency_key_stores_nothing_new(
    hub: Hub, client: TestClient, api_key: str
) -> None:
    headers = {**auth(api_key), "Idempotency-Key": "vendor-event-42"}
    first = client.post("/ingest/hub", json=canonical(2), headers=headers)
    # same key, even with a different body: the first answer, nothing stored
    again = client.post("/ingest/hub", json=canonical(5), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(hub, InboundMessage) == 1


def test_repeat_of_same_body_is_deduplicated_by_hash(
    hub: Hub, client: TestClient, api_key: str
) -> None:
    body = orjson.dumps(canonical(2))
    headers = {**auth(api_key), "Content-Type": "application/json"}
    first = client.post("/ingest/hub", content=body, headers=headers)
    again = client.post("/ingest/hub", content=body, headers=headers)
    assert again.json()["messageId"] == first.json()["messageId"]
    assert count(hub, InboundMessage) == 1


def test_same_readings_in_two_messages_are_stored_once(
    hub: Hub, client: TestClient, api_key: str
) -> None:
    # e.g. a webhook and a backfill carrying the same readings: different bodies, same readings
    client.post("/ingest/hub", json=canonical(3), headers=auth(api_key))
    client.post("/ingest/hub", json=canonical(4), headers=auth(api_key))
    drain(hub.pipeline, hub.engine, 10)
    with hub.engine.connect() as conn:
        rows = conn.execute(select(Resource.res_type, func.count(), func.max(Resource.version_id))
                            .group_by(Resource.res_type)).all()
    by_type = {r[0]: (r[1], r[2]) for r in rows}
    assert by_type["Observation"] == (4, 1)  # 3 shared + 1 new, none re-versioned


def test_missing_and_wrong_key_get_401_and_store_nothing(hub: Hub, client: TestClient) -> None:
    assert_outcome(client.post("/ingest/hub", json=canonical(1)), 401, "login")
    wrong = client.post("/ingest/hub", json=canonical(1), headers=auth("hub_not-a-real-key"))
    assert_outcome(wrong, 401, "login")
    assert count(hub, InboundMessage) == 0


def test_revoked_key_gets_401(hub: Hub, client: TestClient, api_key: str) -> None:
    api_keys.revoke(hub.engine, "vendor-a")
    assert_outcome(client.post("/ingest/hub", json=canonical(1), headers=auth(api_key)),
                   401, "login")


def test_key_for_another_source_gets_403(hub: Hub, client: TestClient) -> None:
    other = api_keys.create(hub.engine, TEST_SECRET, "vendor-b", ["withings"])
    assert_outcome(client.post("/ingest/hub", json=canonical(1), headers=auth(other)),
                   403, "forbidden")
    assert count(hub, InboundMessage) == 0


def test_unknown_source_404(client: TestClient, api_key: str) -> None:
    body = assert_outcome(client.post("/ingest/nope", json={}, headers=auth(api_key)),
                          404, "not-found")
    assert "nope" in body["issue"][0]["diagnostics"]


def test_wrong_content_type_415(hub: Hub, client: TestClient, api_key: str) -> None:
    answer = client.post("/ingest/hub", content=b"<xml/>",
                         headers={**auth(api_key), "Content-Type": "application/xml"})
    assert_outcome(answer, 415, "not-supported")
    assert count(hub, InboundMessage) == 0


def test_body_over_cap_413_before_parsing(db_url: str) -> None:
    from hub.telemetry import Telemetry
    from tests.conftest import make_settings

    small = Hub.build(make_settings(db_url, max_body_bytes=1000), Telemetry.disabled())
    key = api_keys.create(small.engine, TEST_SECRET, "vendor-a", ["hub"])
    with TestClient(create_app(small, inline_worker=False)) as c:
        big = b"{" + b" " * 2000 + b"}"  # would parse fine: the cap decides, not the parser
        answer = c.post("/ingest/hub", content=big,
                        headers={**auth(key), "Content-Type": "application/json"})
        assert_outcome(answer, 413, "too-costly")

        def chunks():
            yield b"{" + b" " * 900
            yield b" " * 900 + b"}"

        streamed = c.post("/ingest/hub", content=chunks(),
                          headers={**auth(key), "Content-Type": "application/json"})
        assert_outcome(streamed, 413, "too-costly")
    assert count(small, InboundMessage) == 0
    small.engine.dispose()


def test_undecodable_body_is_kept_with_reason_and_answered_400(
    hub: Hub, client: TestClient, api_key: str
) -> None:
    answer = client.post("/ingest/hub", content=b'{"device": ',
                         headers={**auth(api_key), "Content-Type": "application/json"})
    body = assert_outcome(answer, 400, "invalid")
    assert "not JSON" in body["issue"][0]["diagnostics"]
    with hub.engine.connect() as conn:
        row = conn.execute(select(InboundMessage.status, InboundMessage.error,
                                  InboundMessage.body)).one()
    assert row.status == "failed" and "not JSON" in row.error and row.body == b'{"device": '
    # the next message still goes through
    assert client.post("/ingest/hub", json=canonical(1), headers=auth(api_key)).status_code == 202


def test_bad_reading_is_partial_and_dead_lettered(
    hub: Hub, client: TestClient, api_key: str
) -> None:
    payload = canonical(2)
    payload["readings"].append({"type": "heart-rate", "time": "yesterday", "unit": "/min",
                                "value": 70})
    payload["readings"].append({"type": "heart-rate", "time": "2026-11-20T09:00:00Z",
                                "unit": "kg", "value": 70})
    message_id = client.post("/ingest/hub", json=payload, headers=auth(api_key)).json()["messageId"]
    drain(hub.pipeline, hub.engine, 10)
    lineage = client.get(f"/messages/{message_id}", headers=auth(api_key)).json()
    assert lineage["status"] == "partial"
    assert "readings[2].time" in lineage["error"] and "readings[3].unit" in lineage["error"]
    assert sum(r.startswith("Observation/") for r in lineage["resources"]) == 2


def test_messages_of_other_clients_are_hidden(hub: Hub, client: TestClient, api_key: str) -> None:
    message_id = client.post("/ingest/hub", json=canonical(1),
                             headers=auth(api_key)).json()["messageId"]
    other = api_keys.create(hub.engine, TEST_SECRET, "vendor-b", ["withings"])
    assert_outcome(client.get(f"/messages/{message_id}", headers=auth(other)), 404, "not-found")


def test_health_and_ready_need_no_key(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"] == "ready"


def test_docs_in_development_but_not_in_production(db_url: str) -> None:
    from hub.telemetry import Telemetry
    from tests.conftest import make_settings

    dev = Hub.build(make_settings(db_url, env="development"), Telemetry.disabled())
    prod = Hub.build(make_settings(db_url, env="production"), Telemetry.disabled())
    with TestClient(create_app(dev, inline_worker=False)) as c:
        assert c.get("/docs").status_code == 200
        assert "/ingest/{source}" in c.get("/openapi.json").json()["paths"]
    with TestClient(create_app(prod, inline_worker=False)) as c:
        assert c.get("/docs").status_code == 404
        assert c.get("/openapi.json").status_code == 404
        assert c.get("/health").status_code == 200
    dev.engine.dispose()
    prod.engine.dispose()
