"""The pipeline through the store: outcomes, quarantine and release, replay, isolation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import func, select

from connectors.hub_reading import HubReadingConnector
from hub.contracts import Identifier
from hub.identity import assign_device
from hub.identity.admin import unassign
from hub.pipeline import Pipeline
from hub.registry import ConnectorRegistry
from hub.runtime import Hub
from hub.store import inbox
from hub.store.models import DeadLetter, InboundMessage, Resource
from hub.worker import drain
from tests.readings import BASE_TIME, canonical

DEVICE_SYSTEM = "urn:iomt-fhir-hub:device"
PATIENT_SYSTEM = "urn:iomt-fhir-hub:patient"


def post(hub: Hub, body: dict) -> str:
    return inbox.receive(hub.engine, source="hub", channel="http", content_type="application/json",
                         body=orjson.dumps(body)).message_id


def observation_subjects(hub: Hub) -> list[str | None]:
    with hub.engine.connect() as conn:
        return list(conn.execute(select(Resource.subject).where(Resource.res_type == "Observation")
                                 .order_by(Resource.effective)).scalars())


def test_unassigned_device_is_quarantined_then_released_by_assignment(hub: Hub) -> None:
    message_id = post(hub, canonical(3, device="cuff-9", patient=None))
    drain(hub.pipeline, hub.engine, 10)
    held = inbox.get(hub.engine, message_id)
    assert held["status"] == "quarantined" and "unassigned device" in held["error"]
    assert observation_subjects(hub) == []
    with hub.engine.connect() as conn:  # quarantine is not a dead letter: it resolves itself
        assert conn.execute(select(func.count()).select_from(DeadLetter)).scalar_one() == 0

    assign_device(hub.engine, Identifier(DEVICE_SYSTEM, "cuff-9"),
                  Identifier(PATIENT_SYSTEM, "pat-7"), BASE_TIME - timedelta(days=1))
    drain(hub.pipeline, hub.engine, 10)
    assert inbox.get(hub.engine, message_id)["status"] == "processed"
    subjects = observation_subjects(hub)
    assert len(subjects) == 3 and len(set(subjects)) == 1 and subjects[0].startswith("Patient/")


def test_a_moved_device_maps_each_reading_to_its_patient_at_that_time(hub: Hub) -> None:
    device = Identifier(DEVICE_SYSTEM, "cuff-shared")
    assign_device(hub.engine, device, Identifier(PATIENT_SYSTEM, "first"),
                  BASE_TIME - timedelta(days=1))
    # from minute 2 on, the cuff belongs to the second patient (the first assignment ends there)
    unassign(hub.engine, device, BASE_TIME + timedelta(minutes=2))
    assign_device(hub.engine, device, Identifier(PATIENT_SYSTEM, "second"),
                  BASE_TIME + timedelta(minutes=2))
    post(hub, canonical(4, device="cuff-shared", patient=None))
    drain(hub.pipeline, hub.engine, 10)
    subjects = observation_subjects(hub)
    assert subjects[0] == subjects[1] != subjects[2] == subjects[3]


def test_replaying_a_processed_message_changes_nothing(hub: Hub) -> None:
    message_id = post(hub, canonical(5))
    drain(hub.pipeline, hub.engine, 10)
    with hub.engine.connect() as conn:
        before = conn.execute(select(Resource.res_id, Resource.version_id, Resource.content)
                              .order_by(Resource.res_id)).all()
    assert inbox.requeue(hub.engine, status="processed", message_ids=[message_id]) == 1
    assert drain(hub.pipeline, hub.engine, 10) == 1
    with hub.engine.connect() as conn:
        after = conn.execute(select(Resource.res_id, Resource.version_id, Resource.content)
                             .order_by(Resource.res_id)).all()
    assert after == before


def test_a_message_that_fails_does_not_stop_the_others(hub: Hub) -> None:
    good_1 = post(hub, canonical(2, device="a"))
    bad = post(hub, {"device": {"id": "b"}, "readings": [{"type": "no-such-type",
                                                          "time": "2026-11-20T08:00:00Z",
                                                          "value": 1}]})
    good_2 = post(hub, canonical(2, device="c"))
    drain(hub.pipeline, hub.engine, 10)
    assert inbox.get(hub.engine, good_1)["status"] == "processed"
    failed = inbox.get(hub.engine, bad)
    assert failed["status"] == "failed" and "unknown measurement type" in failed["error"]
    assert inbox.get(hub.engine, good_2)["status"] == "processed"
    with hub.engine.connect() as conn:
        letters = conn.execute(select(DeadLetter.message_id, DeadLetter.stage)).all()
    assert [(m, s) for m, s in letters] == [(bad, "normalize")]


class BuggyConnector(HubReadingConnector):
    """A real connector with a bug: it crashes (not a DataError) on one device's payloads."""

    name = "buggy"

    def decode(self, body: bytes, content_type: str) -> Any:
        if b"explodes" in body:
            raise RuntimeError("simulated connector bug")
        return super().decode(body, content_type)

    @property
    def mapping_name(self) -> str:
        return "hub"


def test_internal_error_in_one_message_is_isolated(hub: Hub) -> None:
    # A bug, not bad data: that message fails with a generic reason, its partial writes roll
    # back to its savepoint, and the batch commits the rest.
    pipeline = Pipeline(connectors=ConnectorRegistry({"buggy": BuggyConnector()}),
                        mappings=hub.mappings)

    def post_buggy(body: dict) -> str:
        return inbox.receive(hub.engine, source="buggy", channel="http",
                             content_type="application/json",
                             body=orjson.dumps(body)).message_id

    good = post_buggy(canonical(2, device="ok"))
    boom = post_buggy(canonical(2, device="explodes"))
    later = post_buggy(canonical(2, device="fine"))
    drain(pipeline, hub.engine, 10)
    assert inbox.get(hub.engine, good)["status"] == "processed"
    assert inbox.get(hub.engine, later)["status"] == "processed"
    failed = inbox.get(hub.engine, boom)
    assert failed["status"] == "failed" and "internal error (RuntimeError)" in failed["error"]
    with hub.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(InboundMessage)
                            .where(InboundMessage.status == "received")).scalar_one() == 0


def test_an_implausible_reading_is_stored_held_and_named_in_the_lineage(hub: Hub) -> None:
    body = canonical(2)
    body["readings"][1] = {"type": "oxygen-saturation", "time": "2026-11-20T08:05:00Z",
                           "unit": "%", "value": 101}
    message_id = post(hub, body)
    drain(hub.pipeline, hub.engine, 10)
    lineage = inbox.get(hub.engine, message_id)
    assert lineage["status"] == "processed" and lineage["error"] is None
    assert lineage["notes"].startswith("readings[1]: held for review")
    assert "101" not in lineage["notes"]  # the reason, never the value
    with hub.engine.connect() as conn:
        statuses = dict(conn.execute(select(Resource.code, Resource.status)
                                     .where(Resource.res_type == "Observation")).all())
    assert statuses["2708-6"] == "preliminary" and statuses["8867-4"] == "final"
