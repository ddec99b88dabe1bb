"""Quarantine releases: a registry change puts back in the queue only the quarantined messages
waiting for what it touched (hub.store.quarantine), through hub.identity.admin and the real
pipeline, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from hub.contracts import Identifier, RawMessage
from hub.identity import admin
from hub.runtime import Hub
from hub.store import inbox, quarantine
from hub.store.db import is_postgres, upgrade, utcnow, write_tx
from hub.store.models import InboundMessage, Resource
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import PG_ADMIN_URL, make_settings
from tests.hl7v2_fhir.test_identity import OID_A, SYS_A, adt, oru
from tests.readings import BASE_TIME, canonical

DEVICE_SYSTEM = "urn:iomt-fhir-hub:device"
PATIENT_SYSTEM = "urn:iomt-fhir-hub:patient"


def dev(value: str) -> tuple[str, str, str]:
    return ("Device", DEVICE_SYSTEM, value)


def pat(value: str) -> tuple[str, str, str]:
    return ("Patient", PATIENT_SYSTEM, value)


def device(value: str) -> Identifier:
    return Identifier(DEVICE_SYSTEM, value)


def patient(value: str) -> Identifier:
    return Identifier(PATIENT_SYSTEM, value)


def build(url: str) -> Hub:
    """The canonical source in lookup mode."""
    return Hub.build(make_settings(url, identity_modes={"hub": "lookup"}), Telemetry.disabled())


@pytest.fixture
def lookup_hub(db_url: str) -> Iterator[Hub]:
    built = build(db_url)
    yield built
    built.engine.dispose()


def quarantined(hub: Hub, body: dict) -> str:
    """Receive ``body``, process the queue; the message must end in quarantine."""
    message_id = inbox.receive(hub.engine, source="hub", channel="test",
                               content_type="application/json",
                               body=orjson.dumps(body)).message_id
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, message_id) == "quarantined"
    return message_id


def state(hub: Hub, message_id: str) -> str:
    found = inbox.get(hub.engine, message_id)
    assert found is not None
    return str(found["status"])


def waits(hub: Hub, message_id: str) -> list[tuple[str, str, str]]:
    with hub.engine.connect() as conn:
        return quarantine.waits(conn, message_id)


def statuses(hub: Hub) -> dict[str, int]:
    return inbox.counts_by_status(hub.engine)


def test_a_registration_releases_only_the_messages_waiting_for_it(lookup_hub: Hub) -> None:
    hub = lookup_hub
    a = quarantined(hub, canonical(1, device="cuff-a", patient=None))
    b = quarantined(hub, canonical(1, device="cuff-b", patient=None))
    c = quarantined(hub, canonical(1, device="cuff-c", patient="p-c"))
    assert (waits(hub, a), waits(hub, b)) == ([dev("cuff-a")], [dev("cuff-b")])
    assert waits(hub, c) == [dev("cuff-c"), pat("p-c")]  # neither is registered

    assert admin.register_device(hub.engine, [device("cuff-a")]).released == 1
    assert [state(hub, m) for m in (a, b, c)] == ["received", "quarantined", "quarantined"]
    assert waits(hub, a) == []  # out of quarantine: no longer waiting
    drain(hub.pipeline, hub.engine, 10)
    held = inbox.get(hub.engine, a)
    assert held is not None and held["status"] == "quarantined"
    assert "unassigned device" in held["error"]
    assert waits(hub, a) == [dev("cuff-a")]  # now for its assignment

    # A patient nobody waits for: nothing released. Then the assignment releases cuff-a only.
    assert admin.register_patient(hub.engine, [patient("p-1")]).released == 0
    made = admin.assign(hub.engine, device("cuff-a"), patient("p-1"), BASE_TIME)
    assert made.released == 1
    assert [state(hub, m) for m in (a, b, c)] == ["received", "quarantined", "quarantined"]
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, a) == "processed" and waits(hub, a) == []
    # Registering c's patient releases c (it waits for both; its device is still unknown).
    assert admin.register_patient(hub.engine, [patient("p-c")]).released == 1
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, c) == "quarantined" and waits(hub, c) == [dev("cuff-c")]
    # Nothing acknowledged was lost: each message is processed or still waits.
    assert statuses(hub) == {"processed": 1, "quarantined": 2}
    assert waits(hub, b) == [dev("cuff-b")]


@pytest.mark.parametrize("first", ["device", "patient"])
def test_a_message_waiting_for_two_identifiers_is_placed_once_both_resolve(
        lookup_hub: Hub, first: str) -> None:
    """A reading naming an unknown cuff and an unknown patient waits for both: either
    registration releases it, and it returns to quarantine waiting for the other, which then
    releases it for good."""
    hub = lookup_hub
    message = quarantined(hub, canonical(2, device="cuff-d", patient="p-d"))
    assert waits(hub, message) == [dev("cuff-d"), pat("p-d")]

    def register(which: str) -> int:
        if which == "device":
            return admin.register_device(hub.engine, [device("cuff-d")]).released
        return admin.register_patient(hub.engine, [patient("p-d")]).released

    second = "patient" if first == "device" else "device"
    assert register(first) == 1
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, message) == "quarantined"
    assert waits(hub, message) == [pat("p-d") if first == "device" else dev("cuff-d")]
    assert register(second) == 1
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, message) == "processed" and waits(hub, message) == []
    with hub.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Resource)
                            .where(Resource.res_type == "Observation")).scalar_one() == 2


def test_assigning_or_unassigning_a_device_releases_only_the_messages_waiting_for_it(
        hub: Hub) -> None:
    """Create mode (the ``hub`` fixture): cuffs register on first sight; readings without a
    patient wait for their cuff's assignment."""
    x = quarantined(hub, canonical(1, device="cuff-x", patient=None, start=120))  # 10:00
    y = quarantined(hub, canonical(1, device="cuff-y", patient=None))
    assert (waits(hub, x), waits(hub, y)) == ([dev("cuff-x")], [dev("cuff-y")])
    admin.register_patient(hub.engine, [patient("ann")])

    # An assignment that does not cover x's reading: released, and back, still waiting.
    made = admin.assign(hub.engine, device("cuff-x"), patient("ann"),
                        BASE_TIME + timedelta(hours=3))
    assert made.released == 1 and state(hub, y) == "quarantined"
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, x) == "quarantined" and waits(hub, x) == [dev("cuff-x")]
    ended = admin.unassign(hub.engine, device("cuff-x"), BASE_TIME + timedelta(hours=4))
    assert ended.released == 1 and state(hub, y) == "quarantined"
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, x) == "quarantined"
    # One that covers it.
    assert admin.assign(hub.engine, device("cuff-x"), patient("ann"), BASE_TIME,
                        BASE_TIME + timedelta(hours=3)).released == 1
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, x) == "processed" and state(hub, y) == "quarantined"
    assert waits(hub, y) == [dev("cuff-y")]


def test_a_registration_in_a_message_releases_the_readings_waiting_for_it(
        lookup_hub: Hub) -> None:
    """A FHIR Patient a message states registers its identifiers (hub.identity.resolver): the
    readings waiting for that patient are released, the others stay."""
    hub = lookup_hub
    admin.register_device(hub.engine, [device("cuff-e")])
    waiting = quarantined(hub, canonical(1, device="cuff-e", patient="p-e"))
    other = quarantined(hub, canonical(1, device="cuff-e", patient="p-f"))
    assert waits(hub, waiting) == [pat("p-e")]
    body = orjson.dumps({"resourceType": "Patient",
                         "identifier": [{"system": PATIENT_SYSTEM, "value": "p-e"}]})
    inbox.receive(hub.engine, source="fhir", channel="test", content_type="application/fhir+json",
                  body=body)
    drain(hub.pipeline, hub.engine, 10)
    assert state(hub, waiting) == "processed"
    assert state(hub, other) == "quarantined" and waits(hub, other) == [pat("p-f")]


def test_a_hold_that_cannot_be_stored_waits_for_any_change(lookup_hub: Hub) -> None:
    """An identifier longer than the registry stores can never be registered: the message
    waits for any change (as every message did), never for nothing."""
    hub = lookup_hub
    message = quarantined(hub, canonical(1, device="c" * 250, patient=None))
    assert waits(hub, message) == [quarantine.ANY]
    assert admin.register_patient(hub.engine, [patient("anyone")]).released == 1


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database with no schema yet: once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    request.applymarker(pytest.mark.postgres)
    base: str = request.getfixturevalue("postgres_url")  # skips or fails as the suite does
    name = f"hub_q_{uuid.uuid4().hex[:10]}"
    server = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


def _quarantined_at_0009(engine: Engine, body: dict[str, object]) -> str:
    """A message quarantined by a hub at schema 0009, written with that schema's columns (the
    current ``inbox.receive`` writes columns later migrations added)."""
    message_id, raw = str(uuid.uuid4()), orjson.dumps(body)
    with write_tx(engine) as conn:
        conn.execute(text(
            "INSERT INTO inbound_message (id, source, channel, received_at, content_type, body, "
            "sha256, dedupe_key, status, attempts) VALUES (:id, 'hub', 'test', :at, "
            "'application/json', :body, :sha, :key, 'quarantined', 0)"),
            {"id": message_id, "at": utcnow(), "body": raw, "sha": inbox.body_hash(raw),
             "key": f"sha256:{inbox.body_hash(raw)}"})
    return message_id


def test_messages_quarantined_before_the_migration_are_released_by_any_change(
        empty_url: str) -> None:
    upgrade(empty_url, "0009")  # before inbox_hold existed
    hub = None
    try:
        old = create_engine(empty_url.replace("postgresql://", "postgresql+psycopg://"))
        held = [_quarantined_at_0009(old, canonical(1, device=f"cuff-{n}", patient=None))
                for n in (1, 2)]
        old.dispose()
        upgrade(empty_url)
        hub = build(empty_url)
        assert [waits(hub, m) for m in held] == [[quarantine.ANY]] * 2
        # A change that concerns neither releases both, as every change did before.
        assert admin.register_patient(hub.engine, [patient("someone")]).released == 2
        drain(hub.pipeline, hub.engine, 10)
        assert [state(hub, m) for m in held] == ["quarantined"] * 2
        assert [waits(hub, m) for m in held] == [[dev("cuff-1")], [dev("cuff-2")]]
        assert admin.register_patient(hub.engine, [patient("another")]).released == 0
        assert admin.register_device(hub.engine, [device("cuff-2")]).released == 1
        with hub.engine.connect() as conn:  # nothing acknowledged was lost
            assert conn.execute(select(func.count()).select_from(InboundMessage)
                                ).scalar_one() == 2
    finally:
        if hub is not None:
            hub.engine.dispose()


def test_on_postgres_a_worker_awaiting_a_key_holds_off_a_change_releasing_it(
        db_url: str) -> None:
    """The lock that keeps a worker quarantining for a key and a change resolving it from
    missing each other's uncommitted writes (hub.store.quarantine): deterministic, no timing."""
    hub = build(db_url)
    try:
        if not is_postgres(hub.engine):
            pytest.skip("SQLite has one writer at a time: nothing to lock")
        probe = "SELECT pg_try_advisory_xact_lock(%s)"
        with write_tx(hub.engine) as worker:
            quarantine.awaiting(worker, dev("cuff-z"))
            with hub.engine.connect() as change:
                taken = change.exec_driver_sql(
                    probe, (quarantine._lock_id(dev("cuff-z")),)).scalar_one()
                other = change.exec_driver_sql(
                    probe, (quarantine._lock_id(dev("cuff-w")),)).scalar_one()
                change.rollback()
        assert (taken, other) == (False, True)
    finally:
        hub.engine.dispose()


def test_a_merge_releases_the_readings_waiting_for_the_identifiers_it_binds(db_url: str) -> None:
    """HL7v2 in lookup mode: an ORU naming an MRN nobody registered waits for it; an ADT^A40
    merging that MRN into a registered patient binds it, and releases that ORU only."""
    hub = Hub.build(make_settings(db_url, identity_modes={"hl7v2": "lookup"}),
                    Telemetry.disabled())
    try:
        def hl7(body: bytes) -> str:
            message_id = inbox.receive(hub.engine, source="hl7v2", channel="test",
                                       content_type="x-application/hl7-v2+er7",
                                       body=body).message_id
            drain(hub.pipeline, hub.engine, 10)
            return message_id

        waiting = hl7(oru("O1", f"MRN-9^^^H&{OID_A}&ISO^MR", 72))
        other = hl7(oru("O2", f"MRN-8^^^H&{OID_A}&ISO^MR", 73))
        assert [state(hub, m) for m in (waiting, other)] == ["quarantined"] * 2
        assert waits(hub, waiting) == [("Patient", SYS_A, "MRN-9")]
        assert state(hub, hl7(adt("A04", "A1", f"MRN-1^^^H&{OID_A}&ISO^MR"))) == "processed"
        assert [state(hub, m) for m in (waiting, other)] == ["quarantined"] * 2
        merged = hl7(adt("A40", "M1", f"MRN-1^^^H&{OID_A}&ISO^MR",
                         extra=f"MRG|MRN-9^^^H&{OID_A}&ISO^MR"))
        assert state(hub, merged) == "processed"
        drain(hub.pipeline, hub.engine, 10)
        assert state(hub, waiting) == "processed"
        assert state(hub, other) == "quarantined" and waits(hub, other) == [
            ("Patient", SYS_A, "MRN-8")]
    finally:
        hub.engine.dispose()


def test_registrations_on_first_sight_release_the_readings_waiting_for_them(
        lookup_hub: Hub) -> None:
    """HL7v2 in create mode registers what it names (a prepared message: the commit registers
    and releases); canonical readings in lookup mode waiting for those MRNs are released, each
    by the message that registers its MRN: an ADT's Patient, an ORU's PID-3 seen first."""
    hub = lookup_hub
    admin.register_device(hub.engine, [device("cuff-g")])

    def naming(mrn: str) -> dict:
        body = canonical(1, device="cuff-g", patient=None)
        body["patient"] = {"id": mrn, "system": SYS_A}
        return body

    by_adt = quarantined(hub, naming("MRN-5"))
    by_oru = quarantined(hub, naming("MRN-6"))
    assert waits(hub, by_adt) == [("Patient", SYS_A, "MRN-5")]

    def hl7(body: bytes) -> None:
        message_id = inbox.receive(hub.engine, source="hl7v2", channel="test",
                                   content_type="x-application/hl7-v2+er7", body=body).message_id
        drain(hub.pipeline, hub.engine, 10)
        assert state(hub, message_id) == "processed"

    registering = adt("A04", "A1", f"MRN-5^^^H&{OID_A}&ISO^MR")
    with hub.engine.connect() as conn:  # prepared (no longer sent to the lock for releasing)
        prepared = hub.pipeline.prepare(conn, RawMessage(
            "m", "hl7v2", "x-application/hl7-v2+er7", registering, BASE_TIME))
    assert prepared.fallback is None
    assert ("Patient", SYS_A, "MRN-5") in [key for key, _ in prepared.registrations]
    hl7(registering)
    assert (state(hub, by_adt), state(hub, by_oru)) == ("processed", "quarantined")
    hl7(oru("O1", f"MRN-6^^^H&{OID_A}&ISO^MR", 70))
    assert state(hub, by_oru) == "processed"
    assert statuses(hub) == {"processed": 4}


def test_on_postgres_a_reading_processed_during_a_registration_sees_it_or_is_released(
        db_url: str) -> None:
    """The race the lock closes: a registration binds a cuff and releases (nothing waits yet)
    but has not committed when a worker finds the cuff unknown. The worker waits for the
    registration's commit and reads again, so the reading is not quarantined as "unknown
    device" (a hold the registration's release never saw: stranded). The test waits for the
    worker to be blocked on the lock (pg_stat_activity), never for a time."""
    hub = build(db_url)
    try:
        if not is_postgres(hub.engine):
            pytest.skip("SQLite has one writer at a time: the worker waits for the write lock")
        message = inbox.receive(hub.engine, source="hub", channel="test",
                                content_type="application/json",
                                body=orjson.dumps(canonical(1, device="cuff-r", patient=None))
                                ).message_id
        failures: list[BaseException] = []

        def work() -> None:
            try:
                drain(hub.pipeline, hub.engine, 10)
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        worker = threading.Thread(target=work)
        with write_tx(hub.engine) as conn:
            # register_device's own work, in a transaction this test keeps open
            registered = admin._register(conn, "Device", [device("cuff-r")], {}, None)
            assert registered.released == 0  # the reading is not quarantined yet
            worker.start()
            with hub.engine.connect() as watch:
                waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = " \
                          "current_database() AND wait_event_type = 'Lock' AND " \
                          "wait_event = 'advisory'"
                for _ in range(1200):  # the worker is blocked on the cuff's lock, or fails
                    if watch.exec_driver_sql(waiting).scalar_one() or not worker.is_alive():
                        break
                    watch.rollback()
                    time.sleep(0.05)
            assert worker.is_alive(), "the worker finished without waiting for the registration"
        worker.join()
        assert failures == []
        held = inbox.get(hub.engine, message)
        assert held is not None and held["status"] == "quarantined"
        assert "unassigned device" in held["error"]  # it saw the registration
        assert waits(hub, message) == [dev("cuff-r")]
    finally:
        hub.engine.dispose()
