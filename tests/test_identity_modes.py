"""Identity modes: lookup holds readings of unregistered devices/patients in quarantine and
releases them as the registry fills; create (the default) registers on first sight. SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import func, select

from hub.contracts import Identifier
from hub.errors import ConfigurationError
from hub.identity import IdentityModes, admin
from hub.runtime import Hub
from hub.store import inbox, registry
from hub.store.models import DeadLetter, Resource
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import REPO, make_settings
from tests.hl7v2_fhir.test_identity import OID_A, SYS_A, adt, oru
from tests.readings import BASE_TIME, canonical

DEVICE_SYSTEM = "urn:iomt-fhir-hub:device"
PATIENT_SYSTEM = "urn:iomt-fhir-hub:patient"


@pytest.fixture
def lookup_hub(db_url: str) -> Iterator[Hub]:
    """The canonical source and HL7v2 in lookup mode; every other source in create mode."""
    settings = make_settings(db_url, identity_modes={"hub": "lookup", "hl7v2": "lookup"})
    built = Hub.build(settings, Telemetry.disabled())
    yield built
    built.engine.dispose()


def post(hub: Hub, body: dict, source: str = "hub") -> str:
    message_id = inbox.receive(hub.engine, source=source, channel="test",
                               content_type="application/json",
                               body=orjson.dumps(body)).message_id
    drain(hub.pipeline, hub.engine, 10)
    return message_id


def receive_hl7(hub: Hub, body: bytes) -> str:
    message_id = inbox.receive(hub.engine, source="hl7v2", channel="test",
                               content_type="x-application/hl7-v2+er7", body=body).message_id
    drain(hub.pipeline, hub.engine, 10)
    return message_id


def count(hub: Hub, rtype: str) -> int:
    with hub.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Resource)
                                .where(Resource.res_type == rtype)).scalar_one())


def status(hub: Hub, message_id: str) -> tuple[str, str | None]:
    found = inbox.get(hub.engine, message_id)
    assert found is not None
    return found["status"], found["error"]


def test_lookup_quarantines_an_unregistered_device_until_registered_and_assigned(
        lookup_hub: Hub) -> None:
    hub = lookup_hub
    message = post(hub, canonical(2, device="cuff-new", patient=None))
    state, error = status(hub, message)
    assert state == "quarantined" and "unknown device" in error
    assert count(hub, "Device") == count(hub, "Patient") == 0  # nothing registered on sight
    with hub.engine.connect() as conn:  # quarantine resolves itself: not a dead letter
        assert conn.execute(select(func.count()).select_from(DeadLetter)).scalar_one() == 0

    cuff = Identifier(DEVICE_SYSTEM, "cuff-new")
    assert admin.register_device(hub.engine, [cuff]).released == 1
    drain(hub.pipeline, hub.engine, 10)
    state, error = status(hub, message)
    assert state == "quarantined" and "unassigned device" in error  # known now, not assigned

    patient = Identifier(PATIENT_SYSTEM, "p-1")
    pid = admin.register_patient(hub.engine, [patient]).resource["id"]
    admin.assign(hub.engine, cuff, patient, BASE_TIME - timedelta(days=1))
    drain(hub.pipeline, hub.engine, 10)
    assert status(hub, message) == ("processed", None)
    with hub.engine.connect() as conn:
        subjects = {orjson.loads(c)["subject"]["reference"] for c in conn.execute(
            select(Resource.content).where(Resource.res_type == "Observation")).scalars()}
    assert subjects == {f"Patient/{pid}"}
    assert count(hub, "Device") == count(hub, "Patient") == 1


def test_lookup_quarantines_a_reading_naming_an_unregistered_patient(lookup_hub: Hub) -> None:
    hub = lookup_hub
    admin.register_device(hub.engine, [Identifier(DEVICE_SYSTEM, "cuff-1")])
    message = post(hub, canonical(1, device="cuff-1", patient="stranger"))
    state, error = status(hub, message)
    assert state == "quarantined" and "unknown patient" in error
    assert "stranger" not in error  # the identifier's value is never in the reason
    assert count(hub, "Patient") == 0
    admin.register_patient(hub.engine, [Identifier(PATIENT_SYSTEM, "stranger")])
    drain(hub.pipeline, hub.engine, 10)
    assert status(hub, message) == ("processed", None)


def test_other_sources_keep_creating_on_first_sight(lookup_hub: Hub) -> None:
    """iomt is not configured, so it stays in the default mode, create."""
    assert lookup_hub.pipeline.identity_modes.of("iomt") == "create"
    body = (REPO / "fixtures/devices/iomt/mapping-generator_deviceData_HeartRate.json").read_bytes()
    message_id = inbox.receive(lookup_hub.engine, source="iomt", channel="test",
                               content_type="application/json", body=body).message_id
    drain(lookup_hub.pipeline, lookup_hub.engine, 10)
    assert status(lookup_hub, message_id)[0] == "processed"
    assert count(lookup_hub, "Device") == count(lookup_hub, "Patient") == 1
    assert count(lookup_hub, "Observation") >= 1


def test_an_adt_registration_releases_a_reading_that_waited_for_its_patient(
        lookup_hub: Hub) -> None:
    """HL7v2 in lookup mode: an ORU naming an unregistered MRN waits; the ADT^A04 that
    registers the patient (a registration in either mode) puts it back in the queue."""
    hub = lookup_hub
    waiting = receive_hl7(hub, oru("O1", f"MRN-5^^^H&{OID_A}&ISO^MR", 72))
    state, error = status(hub, waiting)
    assert state == "quarantined" and "unknown patient" in error
    registered = receive_hl7(hub, adt("A04", "A1", f"MRN-5^^^H&{OID_A}&ISO^MR"))
    assert status(hub, registered) == ("processed", None)
    drain(hub.pipeline, hub.engine, 10)
    assert status(hub, waiting) == ("processed", None)
    with hub.engine.connect() as conn:
        (content,) = conn.execute(select(Resource.content)
                                  .where(Resource.res_type == "Observation")).scalars()
        pid = registry.lookup(conn, "Patient", Identifier(SYS_A, "MRN-5"))
    assert orjson.loads(content)["subject"]["reference"] == f"Patient/{pid}"


def test_modes_name_only_known_sources() -> None:
    modes = IdentityModes.configured("create", {"withings": "lookup"}, ["hub", "withings"])
    assert (modes.of("withings"), modes.of("hub"), modes.any_lookup) == ("lookup", "create", True)
    assert not IdentityModes().any_lookup
    with pytest.raises(ConfigurationError, match=r"unknown source.*withngs"):
        IdentityModes.configured("create", {"withngs": "lookup"}, ["hub", "withings"])


def test_modes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HUB_IDENTITY_MODE", "lookup")
    monkeypatch.setenv("HUB_IDENTITY_MODES", '{"hl7v2": "create"}')
    settings = make_settings(f"sqlite:///{tmp_path}/h.db")
    assert (settings.identity_mode, settings.identity_modes) == ("lookup", {"hl7v2": "create"})
    monkeypatch.setenv("HUB_IDENTITY_MODES", '{"hl7v2": "sometimes"}')
    with pytest.raises(ValueError, match="identity_modes"):
        make_settings(f"sqlite:///{tmp_path}/h.db")
