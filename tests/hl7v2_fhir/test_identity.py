"""ADT feeds the identity registry; A40 merges; one reading is one Observation whatever the
channel. Runs on SQLite and on PostgreSQL (the ``hub`` fixture)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from hub.contracts import Identifier
from hub.identity import assign_device
from hub.runtime import Hub
from hub.store import inbox, registry, resources
from hub.store.models import Resource
from hub.worker import drain
from tests.readings import BASE_TIME

OID_A, OID_B = "1.2.3.4.5", "1.2.3.4.6"
SYS_A, SYS_B = f"urn:oid:{OID_A}", f"urn:oid:{OID_B}"
EUI = "0123456789ABCDEF"
EUI_VALUE = "01-23-45-67-89-AB-CD-EF"
EUI_SYSTEM = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"


def msh(kind: str, control: str) -> str:
    return f"MSH|^~\\&|EHR|HOSP|HUB|HUB|20240105100000+0000||{kind}|{control}|P|2.5.1"


def adt(event: str, control: str, pid3: str, name: str = "Doe^Jane", extra: str = "") -> bytes:
    lines = [msh(f"ADT^{event}", control), f"EVN|{event}|20240105100000",
             f"PID|||{pid3}||{name}||19800101|F"]
    if extra:
        lines.append(extra)
    return ("\r".join(lines) + "\r").encode()


def oru(control: str, pid3: str, hr: int, when: str = "20240105093000+0000") -> bytes:
    lines = [msh("ORU^R01^ORU_R01", control), f"PID|||{pid3}", "OBR|1",
             f"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.1|{hr}|264864^MDC_DIM_BEAT_PER_MIN^"
             f"MDC|||||F|||{when}||||{EUI}^EUI-64"]
    return ("\r".join(lines) + "\r").encode()


def receive(hub: Hub, body: bytes, source: str = "hl7v2") -> str:
    ctype = "application/json" if source == "hub" else "x-application/hl7-v2+er7"
    message_id = inbox.receive(hub.engine, source=source, channel="test", content_type=ctype,
                               body=body).message_id
    drain(hub.pipeline, hub.engine, 10)
    found = inbox.get(hub.engine, message_id)
    assert found is not None and found["status"] == "processed", found
    return message_id


def stored(hub: Hub, rtype: str) -> list[dict[str, Any]]:
    with hub.engine.connect() as conn:
        keys = [(rtype, i) for i in conn.execute(
            select(Resource.res_id).where(Resource.res_type == rtype)).scalars()]
        return resources.read_many(conn, keys)


def bound(hub: Hub, system: str, value: str) -> str | None:
    with hub.engine.connect() as conn:
        return registry.lookup(conn, "Patient", Identifier(system, value))


def test_adt_registers_every_identifier_and_readings_follow(hub: Hub) -> None:
    receive(hub, adt("A01", "A1", f"MRN-1^^^H&{OID_A}&ISO^MR~NHS-9^^^N&{OID_B}&ISO^NH"))
    (patient,) = stored(hub, "Patient")
    assert bound(hub, SYS_A, "MRN-1") == patient["id"] == bound(hub, SYS_B, "NHS-9")
    assert patient["name"] == [{"family": "Doe", "given": ["Jane"]}]
    # A reading naming only the second identifier lands on the same Patient.
    receive(hub, oru("O1", f"NHS-9^^^N&{OID_B}&ISO^NH", 72))
    (obs,) = stored(hub, "Observation")
    assert obs["subject"]["reference"] == f"Patient/{patient['id']}"
    assert len(stored(hub, "Patient")) == 1


def test_adt_after_readings_keeps_the_patient_and_updates_it(hub: Hub) -> None:
    receive(hub, oru("O1", f"MRN-2^^^H&{OID_A}&ISO^MR", 72))
    (bare,) = stored(hub, "Patient")
    receive(hub, adt("A04", "A2", f"NEW-7^^^N&{OID_B}&ISO^NH~MRN-2^^^H&{OID_A}&ISO^MR"))
    receive(hub, adt("A08", "A3", f"MRN-2^^^H&{OID_A}&ISO^MR", name="Roe^Jane"))
    (patient,) = stored(hub, "Patient")
    assert patient["id"] == bare["id"]  # the id the first reading registered
    assert patient["name"][0]["family"] == "Roe"
    assert bound(hub, SYS_B, "NEW-7") == bare["id"]


def test_a40_merge_moves_everything_to_the_survivor(hub: Hub) -> None:
    old, new = f"OLD-1^^^H&{OID_A}&ISO^MR", f"NEW-1^^^H&{OID_A}&ISO^MR"
    receive(hub, oru("O1", old, 72))
    receive(hub, adt("A01", "A1", new, name="Survivor^Sam"))
    merged_id, survivor_id = bound(hub, SYS_A, "OLD-1"), bound(hub, SYS_A, "NEW-1")
    assert merged_id != survivor_id
    with hub.engine.begin() as conn:  # a device assignment of the merged patient moves too
        device = registry.lookup(conn, "Device", Identifier(EUI_SYSTEM, EUI_VALUE))
    assert device is not None
    assign_device(hub.engine, Identifier(EUI_SYSTEM, EUI_VALUE), Identifier(SYS_A, "OLD-1"),
                  BASE_TIME)
    receive(hub, adt("A40", "M1", new, extra=f"MRG|{old}"))
    patients = {p["id"]: p for p in stored(hub, "Patient")}
    assert patients[merged_id]["active"] is False
    assert patients[merged_id]["link"] == [{"other": {"reference": f"Patient/{survivor_id}"},
                                            "type": "replaced-by"}]
    assert {"other": {"reference": f"Patient/{merged_id}"}, "type": "replaces"} in \
        patients[survivor_id]["link"]
    (obs,) = stored(hub, "Observation")
    assert obs["subject"]["reference"] == f"Patient/{survivor_id}"
    assert bound(hub, SYS_A, "OLD-1") == survivor_id
    with hub.engine.connect() as conn:
        assert registry.patient_at(conn, device, BASE_TIME) == survivor_id
    # The cache was invalidated: a new reading under the old identifier finds the survivor.
    receive(hub, oru("O2", old, 80, when="20240105094000+0000"))
    subjects = {o["subject"]["reference"] for o in stored(hub, "Observation")}
    assert subjects == {f"Patient/{survivor_id}"}


def test_same_reading_over_json_and_hl7_is_one_observation(hub: Hub) -> None:
    body = {"device": {"system": EUI_SYSTEM, "id": EUI_VALUE},
            "patient": {"system": SYS_A, "id": "MRN-5"},
            "readings": [{"type": "heart-rate", "time": "2024-01-05T09:30:00+00:00",
                          "value": 72, "unit": "/min"}]}
    receive(hub, orjson.dumps(body), source="hub")
    receive(hub, oru("O1", f"MRN-5^^^H&{OID_A}&ISO^MR", 72))
    receive(hub, oru("O2", f"MRN-5^^^H&{OID_A}&ISO^MR", 72))  # and the ORU sent twice
    (obs,) = stored(hub, "Observation")
    assert obs["valueQuantity"]["value"] == 72
    assert len(stored(hub, "Patient")) == 1
