"""``POST /hl7v2``: MLLP's semantics over HTTP, the ACK as the body; scoped API keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.hl7v2 import parse_message
from hub.runtime import Hub
from hub.store import api_keys, inbox
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth
from tests.hl7v2_fhir.conftest import CORPUS_HL7

ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
PCD01 = (b"MSH|^~\\&|MON^0011223344556677^EUI-64|W|HUB|H|20240105100000+0000||ORU^R01^ORU_R01|"
         b"H01|P|2.6|||NE|AL\rPID|||MRN-1^^^H&1.2.3&ISO^MR\rOBR|1\r"
         b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.0.1|97|262688^MDC_DIM_PERCENT^MDC|||||F\r")


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub, inline_worker=False)) as c:
        yield c


@pytest.fixture
def hl7_key(hub: Hub) -> str:
    return api_keys.create(hub.engine, TEST_SECRET, "interface-engine", ["hl7v2"])


def test_ack_body_after_durable_write(hub: Hub, client: TestClient, hl7_key: str) -> None:
    response = client.post("/hl7v2", content=PCD01, headers={**ER7, **auth(hl7_key)})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("x-application/hl7-v2+er7")
    ack = parse_message(response.content)
    assert (ack.get("MSA", 1), ack.get("MSA", 2)) == ("AA", "H01")  # PCD-01 NE/AL: the app ACK
    message_id = response.headers["location"].rsplit("/", 1)[1]
    drain(hub.pipeline, hub.engine, 10)
    found = client.get(f"/messages/{message_id}", headers=auth(hl7_key)).json()
    assert found["status"] == "processed" and found["channel"] == "http"
    assert any(ref.startswith("Observation/") for ref in found["resources"])


def test_repeat_replays_the_stored_ack(hub: Hub, client: TestClient, hl7_key: str) -> None:
    first = client.post("/hl7v2", content=PCD01, headers={**ER7, **auth(hl7_key)})
    again = client.post("/hl7v2", content=PCD01, headers={**ER7, **auth(hl7_key)})
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert inbox.counts_by_status(hub.engine) == {"received": 1}


def test_refusals_answer_in_hl7_and_keep_the_body(hub: Hub, client: TestClient,
                                                  hl7_key: str) -> None:
    garbage = client.post("/hl7v2", content=b"hello", headers={**ER7, **auth(hl7_key)})
    assert garbage.status_code == 200 and parse_message(garbage.content).get("MSA", 1) == "AR"
    no_obx = PCD01.split(b"OBX")[0]
    ae = client.post("/hl7v2", content=no_obx, headers={**ER7, **auth(hl7_key)})
    assert parse_message(ae.content).get("MSA", 1) == "AE"
    assert inbox.counts_by_status(hub.engine) == {"failed": 2}


def test_scope_auth_and_content_type(client: TestClient, hub: Hub, api_key: str,
                                     hl7_key: str) -> None:
    assert client.post("/hl7v2", content=PCD01, headers=ER7).status_code == 401
    other = client.post("/hl7v2", content=PCD01, headers={**ER7, **auth(api_key)})
    assert other.status_code == 403  # a key for source "hub" only
    wrong_type = client.post("/hl7v2", content=PCD01,
                             headers={"Content-Type": "application/json", **auth(hl7_key)})
    assert wrong_type.status_code == 415
    assert inbox.counts_by_status(hub.engine) == {}


def test_a_lab_result_report_is_served_by_the_fhir_api(hub: Hub, client: TestClient,
                                                       hl7_key: str, api_key: str) -> None:
    body = (CORPUS_HL7 / "ipf_oru-r01_v25_lab-loinc.hl7").read_bytes()
    response = client.post("/hl7v2", content=body, headers={**ER7, **auth(hl7_key)})
    assert parse_message(response.content).get("MSA", 1) == "CA"  # it asks for enhanced mode
    drain(hub.pipeline, hub.engine, 10)
    found = client.get("/fhir/DiagnosticReport?code=http://loinc.org|34554-6&status=final",
                       headers=auth(api_key)).json()
    assert found["total"] == 1
    report = found["entry"][0]["resource"]
    patient = report["subject"]["reference"]
    by_patient = client.get(f"/fhir/DiagnosticReport?patient={patient}", headers=auth(api_key))
    assert by_patient.json()["total"] == 1
    for ref in report["result"]:
        assert client.get(f"/fhir/{ref['reference']}", headers=auth(api_key)).status_code == 200
