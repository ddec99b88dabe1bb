"""Registry administration through hub.identity.admin and the real pipeline, on SQLite and
PostgreSQL (the ``hub`` fixture): devices and patients as FHIR resources, time-bounded
assignments (overlaps refused), quarantine released by registry changes, a cuff moved from one
patient to another."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.patient import Patient
from sqlalchemy import select

from hub.contracts import Code, Identifier
from hub.errors import ConflictError, NotFoundError, RequestError
from hub.identity import admin
from hub.runtime import Hub
from hub.store import inbox, registry, resources
from hub.store.models import OutboxItem, Resource
from hub.worker import drain
from tests.readings import BASE_TIME, canonical

DEVICE_SYSTEM = "urn:iomt-fhir-hub:device"
PATIENT_SYSTEM = "urn:iomt-fhir-hub:patient"
CUFF = Identifier(DEVICE_SYSTEM, "cuff-7")
ANN, BOB = Identifier(PATIENT_SYSTEM, "ann"), Identifier(PATIENT_SYSTEM, "bob")
EST = timezone(timedelta(hours=-5))


def post(hub: Hub, body: dict) -> str:
    return inbox.receive(hub.engine, source="hub", channel="test",
                         content_type="application/json", body=orjson.dumps(body)).message_id


def subjects_by_time(hub: Hub) -> dict[str, str]:
    """Observation effective instant (UTC text) → subject."""
    with hub.engine.connect() as conn:
        rows = conn.execute(select(Resource.content).where(Resource.res_type == "Observation"))
        found = [orjson.loads(r.content) for r in rows]
    return {datetime.fromisoformat(o["effectiveDateTime"]).astimezone(UTC).strftime("%H:%M"):
            o["subject"]["reference"] for o in found}


def registered(hub: Hub) -> tuple[str, str, str]:
    """The cuff and both patients registered; their ids."""
    cuff = admin.register_device(hub.engine, [CUFF]).resource["id"]
    ann = admin.register_patient(hub.engine, [ANN]).resource["id"]
    bob = admin.register_patient(hub.engine, [BOB]).resource["id"]
    return cuff, ann, bob


def test_register_device_writes_a_valid_fhir_device_and_updates_it_in_place(hub: Hub) -> None:
    serial = Identifier("urn:acme:serial", "AC-2291")
    first = admin.register_device(
        hub.engine, [serial], device_type=Code("urn:iso:std:iso:11073:10101", "528391",
                                               "MDC_DEV_SPEC_PROFILE_BP"),
        model="BP-200", manufacturer="Acme")
    assert first.created
    device = first.resource
    Device.model_validate(device)
    assert device["identifier"] == [{"system": "urn:acme:serial", "value": "AC-2291"}]
    assert device["type"]["coding"][0]["code"] == "528391"
    assert (device["modelNumber"], device["manufacturer"]) == ("BP-200", "Acme")
    # A second identifier of the same cuff, and a new model: same Device, new version, kept type.
    eui = Identifier("urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680", "00-09-1F-FF-FE-00-00-01")
    again = admin.register_device(hub.engine, [serial, eui], model="BP-210")
    assert not again.created and again.resource["id"] == device["id"]
    assert again.resource["meta"]["versionId"] == "2"
    assert again.resource["modelNumber"] == "BP-210" and again.resource["type"] == device["type"]
    assert len(again.resource["identifier"]) == 2
    with hub.engine.connect() as conn:
        assert registry.lookup(conn, "Device", eui) == device["id"]
    # The same registration again changes nothing.
    assert admin.register_device(hub.engine, [eui]).resource["meta"]["versionId"] == "2"


def test_a_device_registered_first_is_the_one_its_readings_use(hub: Hub) -> None:
    cuff = admin.register_device(hub.engine, [CUFF], model="BP-200").resource["id"]
    post(hub, canonical(1, device="cuff-7"))
    drain(hub.pipeline, hub.engine, 10)
    with hub.engine.connect() as conn:
        device = resources.read(conn, "Device", cuff)
        (obs_content,) = conn.execute(select(Resource.content)
                                      .where(Resource.res_type == "Observation")).scalars()
    assert orjson.loads(obs_content)["device"]["reference"] == f"Device/{cuff}"
    assert device is not None and device["modelNumber"] == "BP-200"  # not overwritten


def test_identifiers_of_two_devices_cannot_be_registered_as_one(hub: Hub) -> None:
    other = Identifier(DEVICE_SYSTEM, "cuff-8")
    admin.register_device(hub.engine, [CUFF])
    admin.register_device(hub.engine, [other])
    with pytest.raises(ConflictError, match="belong to different Devices"):
        admin.register_device(hub.engine, [CUFF, other])


def test_register_patient_writes_a_valid_fhir_patient(hub: Hub) -> None:
    found = admin.register_patient(hub.engine, [ANN], family="Doe", given=["Ann", "B"],
                                   birth_date=datetime(1950, 3, 4).date(), gender="female")
    Patient.model_validate(found.resource)
    assert found.resource["name"] == [{"family": "Doe", "given": ["Ann", "B"]}]
    assert (found.resource["birthDate"], found.resource["gender"]) == ("1950-03-04", "female")


def test_registrations_are_routed_to_the_outbox(hub: Hub) -> None:
    calls: list[int] = []

    def route(written, content):  # a destination that takes everything
        calls.append(len(written))
        return [("ehr", w) for w in written]

    admin.register_device(hub.engine, [CUFF], route=route)
    with hub.engine.connect() as conn:
        rows = conn.execute(select(OutboxItem.res_type, OutboxItem.destination)).all()
    assert calls == [1] and [tuple(r) for r in rows] == [("Device", "ehr")]


def test_assigning_needs_registered_device_and_patient(hub: Hub) -> None:
    with pytest.raises(NotFoundError, match="no Device is registered"):
        admin.assign(hub.engine, CUFF, ANN, BASE_TIME)
    admin.register_device(hub.engine, [CUFF])
    with pytest.raises(NotFoundError, match="no Patient is registered") as caught:
        admin.assign(hub.engine, CUFF, ANN, BASE_TIME)
    assert "ann" not in caught.value.message  # a patient identifier's value is never echoed


def test_overlapping_assignments_of_one_device_are_refused(hub: Hub) -> None:
    registered(hub)
    first = admin.assign(hub.engine, CUFF, ANN, BASE_TIME, BASE_TIME + timedelta(hours=2))
    for start, end in [(BASE_TIME + timedelta(hours=1), None),
                       (BASE_TIME - timedelta(hours=1), BASE_TIME + timedelta(minutes=1)),
                       (BASE_TIME - timedelta(days=1), None)]:
        with pytest.raises(ConflictError, match=f"assignment {first.assignment.id}"):
            admin.assign(hub.engine, CUFF, BOB, start, end)
    with pytest.raises(RequestError, match="end must be after"):
        admin.assign(hub.engine, CUFF, BOB, BASE_TIME, BASE_TIME)
    # Back to back is not an overlap: the periods are half-open.
    admin.assign(hub.engine, CUFF, BOB, BASE_TIME + timedelta(hours=2))
    listed = admin.list_assignments(hub.engine, device=CUFF)
    assert [v.patient[0].value for v in listed] == ["ann", "bob"]
    assert listed[1].assignment.end is None


def test_unassign_ends_the_period_in_force_or_removes_an_empty_one(hub: Hub) -> None:
    registered(hub)
    made = admin.assign(hub.engine, CUFF, ANN, BASE_TIME)
    ended = admin.unassign(hub.engine, CUFF, BASE_TIME.astimezone(EST) + timedelta(hours=3))
    assert ended.assignment.end == BASE_TIME + timedelta(hours=3) and not ended.removed
    with pytest.raises(NotFoundError, match="no assignment in force"):
        admin.unassign(hub.engine, CUFF, BASE_TIME + timedelta(hours=3))
    second = admin.assign(hub.engine, CUFF, BOB, BASE_TIME + timedelta(hours=3))
    gone = admin.unassign(hub.engine, CUFF, BASE_TIME + timedelta(hours=3))
    assert gone.removed and gone.assignment.id == second.assignment.id
    assert [v.assignment.id for v in admin.list_assignments(hub.engine)] == [made.assignment.id]
    assert admin.list_assignments(hub.engine, patient=BOB) == []
    in_force = admin.list_assignments(hub.engine, at=BASE_TIME + timedelta(hours=1))
    assert [v.assignment.id for v in in_force] == [made.assignment.id]


def test_an_assignment_covers_readings_sent_with_another_offset(hub: Hub) -> None:
    """Start 08:00Z; a reading at 03:30-05:00 (08:30Z) is covered, one at 02:30-05:00 is not.
    (SQLite stores times as text: compared unconverted, 03:30 < 08:00 left it unassigned.)"""
    _, ann, _ = registered(hub)
    admin.assign(hub.engine, CUFF, ANN, BASE_TIME)
    body = canonical(2, device="cuff-7", patient=None)
    body["readings"][0]["time"] = (BASE_TIME + timedelta(minutes=30)).astimezone(EST).isoformat()
    body["readings"][1]["time"] = (BASE_TIME - timedelta(minutes=30)).astimezone(EST).isoformat()
    message = post(hub, body)
    drain(hub.pipeline, hub.engine, 10)
    found = inbox.get(hub.engine, message)
    assert found is not None and found["status"] == "partial"
    assert "unassigned device" in found["error"]
    assert subjects_by_time(hub) == {"08:30": f"Patient/{ann}"}


def test_a_cuff_moved_between_patients_maps_each_reading_by_its_time(hub: Hub) -> None:
    """Readings arrive before anyone assigned the cuff: quarantined. The cuff is Ann's from
    08:00, moves to Bob at 10:00: each released reading is filed by its own time, and one from
    before Ann's period stays quarantined until an assignment covers it."""
    cuff, ann, bob = registered(hub)
    morning = post(hub, canonical(3, device="cuff-7", patient=None, start=0))  # 08:00-08:02
    late = post(hub, canonical(2, device="cuff-7", patient=None, start=150))  # 10:30, 10:31
    early = post(hub, canonical(1, device="cuff-7", patient=None, start=-60))  # 07:00
    drain(hub.pipeline, hub.engine, 10)
    assert {inbox.get(hub.engine, m)["status"] for m in (morning, late, early)} == {"quarantined"}

    assert admin.assign(hub.engine, CUFF, ANN, BASE_TIME).released == 3
    admin.unassign(hub.engine, CUFF, BASE_TIME + timedelta(hours=2))  # the cuff moves at 10:00
    admin.assign(hub.engine, CUFF, BOB, BASE_TIME + timedelta(hours=2))
    post(hub, canonical(1, device="cuff-7", patient=None, start=119))  # 09:59
    post(hub, canonical(1, device="cuff-7", patient=None, start=120))  # 10:00
    drain(hub.pipeline, hub.engine, 10)
    assert inbox.get(hub.engine, morning)["status"] == "processed"
    assert inbox.get(hub.engine, late)["status"] == "processed"
    assert subjects_by_time(hub) == {
        "08:00": f"Patient/{ann}", "08:01": f"Patient/{ann}", "08:02": f"Patient/{ann}",
        "09:59": f"Patient/{ann}", "10:00": f"Patient/{bob}", "10:30": f"Patient/{bob}",
        "10:31": f"Patient/{bob}"}
    held = inbox.get(hub.engine, early)
    assert held["status"] == "quarantined" and "unassigned device" in held["error"]

    released = admin.assign(hub.engine, CUFF, BOB, BASE_TIME - timedelta(hours=2),
                            BASE_TIME - timedelta(minutes=30))
    assert released.released == 1
    drain(hub.pipeline, hub.engine, 10)
    assert inbox.get(hub.engine, early)["status"] == "processed"
    assert subjects_by_time(hub)["07:00"] == f"Patient/{bob}"
    with hub.engine.connect() as conn:
        devices = {orjson.loads(c)["device"]["reference"] for c in conn.execute(
            select(Resource.content).where(Resource.res_type == "Observation")).scalars()}
    assert devices == {f"Device/{cuff}"}
