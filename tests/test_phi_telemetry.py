"""No PHI in logs or traces: canary identifiers and values must never appear in either.

Posts readings seeded with canary patient/device identifiers and values through the real API and
worker, with an in-memory span exporter and every logger at DEBUG, then greps both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hub.api.app import create_app
from hub.runtime import Hub
from hub.store import api_keys
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth, make_settings

CANARIES = ["CANARY-MRN-91827364", "CANARY-DEVICE-5550123", "Canarysmith", "187.654"]


@pytest.fixture
def traced(db_url: str) -> Iterator[tuple[Hub, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    hub = Hub.build(make_settings(db_url), Telemetry.from_env(exporter=exporter))
    yield hub, exporter
    hub.engine.dispose()


def test_canary_phi_never_reaches_logs_or_spans(
    traced: tuple[Hub, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    hub, exporter = traced
    caplog.set_level(logging.DEBUG)
    key = api_keys.create(hub.engine, TEST_SECRET, "vendor-a", ["hub"])
    payload = {
        "device": {"id": CANARIES[1]},
        "patient": {"system": "urn:oid:2.16.840.1.113883.19.5", "id": CANARIES[0]},
        "readings": [
            {"type": "heart-rate", "time": "2026-11-20T08:00:00Z", "unit": "/min",
             "value": 187.654, "id": CANARIES[2]},
            # bad readings exercise the error paths too
            {"type": "heart-rate", "time": "2026-11-20T08:01:00Z", "unit": "kg", "value": 187.654},
            {"type": "heart-rate", "time": CANARIES[2], "unit": "/min", "value": 1},
        ],
    }
    with TestClient(create_app(hub, inline_worker=False)) as client:
        answer = client.post("/ingest/hub", json=payload, headers=auth(key))
        assert answer.status_code == 202
        drain(hub.pipeline, hub.engine, 10)
        lineage = client.get(f"/messages/{answer.json()['messageId']}", headers=auth(key)).json()
        assert lineage["status"] == "partial"
        # an undecodable body with a canary in it
        client.post("/ingest/hub", content=f'{{"device": "{CANARIES[0]}"'.encode(),
                    headers={**auth(key), "Content-Type": "application/json"})

    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    assert {"hub.intake", "hub.message", "hub.decode", "hub.normalize", "hub.store"} <= names
    # one trace per message: processing continues the intake's trace
    intake = next(s for s in spans if s.name == "hub.intake")
    message = next(s for s in spans if s.name == "hub.message")
    assert message.context.trace_id == intake.context.trace_id

    exported = " ".join(
        f"{s.name} {dict(s.attributes or {})} {[dict(e.attributes or {}) for e in s.events]}"
        for s in spans)
    logged = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    for canary in CANARIES:
        assert canary not in exported, f"canary {canary} leaked into a span"
        assert canary not in logged, f"canary {canary} leaked into a log line"


def test_span_attributes_outside_the_allow_list_are_refused() -> None:
    telemetry = Telemetry.from_env(exporter=InMemorySpanExporter())
    with pytest.raises(ValueError, match="allow-list"), telemetry.span("store", patient="x"):
        pass
