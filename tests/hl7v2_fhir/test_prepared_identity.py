"""HL7v2 device trees and ADT Patients are prepared outside the write lock (``hub.staging``):
their registrations are proposed by prepare and made by the commit, with the outcome of
processing the messages one by one under the lock. On SQLite and PostgreSQL (the ``hub``
fixture)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import func, select

from hub.contracts import Identifier, RawMessage
from hub.identity import IdentityModes, IdentityResolver
from hub.runtime import Hub
from hub.staging import Prepared
from hub.store import inbox, registry
from hub.store.db import write_tx
from hub.store.models import RegistryIdentifier
from hub.worker import drain
from tests.hl7v2_fhir.test_identity import EUI_SYSTEM, EUI_VALUE, OID_A, SYS_A, adt, oru, stored

ER7 = "x-application/hl7-v2+er7"
ONE_BY_ONE = "one by one instead"


def enqueue(hub: Hub, body: bytes) -> str:
    return inbox.receive(hub.engine, source="hl7v2", channel="test", content_type=ER7,
                         body=body).message_id


def prepare_all(hub: Hub) -> tuple[list[RawMessage], list[Prepared]]:
    with hub.engine.connect() as conn:
        raws = inbox.claim(conn, 50, lock=False)
        epoch = registry.epoch(conn)  # as the worker's and preparing processes' batches do
        prepared = [hub.pipeline.prepare(conn, raw, epoch) for raw in raws]
        conn.rollback()
    return raws, prepared


def commit_all(hub: Hub, raws: list[RawMessage], prepared: list[Prepared],
               redone: list[str]) -> None:
    by_id = {raw.id: raw for raw in raws}

    def raw_of(message_id: str) -> RawMessage:  # called for each message processed whole
        redone.append(message_id)
        return by_id[message_id]

    resolver = IdentityResolver(hub.pipeline.identity_cache, hub.pipeline.identity_modes)
    with write_tx(hub.engine) as conn:
        assert inbox.take(conn, list(by_id)) == set(by_id)
        hub.pipeline.commit(conn, prepared, raw_of, resolver)
    resolver.committed()


def bindings(hub: Hub, res_type: str) -> int:
    with hub.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(RegistryIdentifier)
                                .where(RegistryIdentifier.res_type == res_type)).scalar_one())


def test_one_new_device_tree_in_several_orus_of_a_commit_is_registered_once(
        hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hub.pipeline")
    ids = [enqueue(hub, oru(f"O{n}", f"MRN-1^^^H&{OID_A}&ISO^MR", 70 + n,
                            when=f"2024010509{n:02d}00+0000")) for n in range(3)]
    raws, prepared = prepare_all(hub)
    assert [p.fallback for p in prepared] == [None] * 3  # none needs the lock
    device_key = ("Device", EUI_SYSTEM, EUI_VALUE)
    assert all(device_key in dict(p.registrations) for p in prepared)
    redone: list[str] = []
    commit_all(hub, raws, prepared, redone)
    assert redone == [] and ONE_BY_ONE not in caplog.text
    assert [inbox.get(hub.engine, i)["status"] for i in ids] == ["processed"] * 3
    with hub.engine.connect() as conn:
        device = registry.lookup(conn, "Device", Identifier(EUI_SYSTEM, EUI_VALUE))
    devices = stored(hub, "Device")
    assert device in {d["id"] for d in devices}
    assert bindings(hub, "Device") == 1 and bindings(hub, "Patient") == 1
    assert {o["device"]["reference"] for o in stored(hub, "Observation")} == {f"Device/{device}"}
    assert len(stored(hub, "Observation")) == 3


def test_adt_registration_and_update_in_one_commit_keep_the_update(hub: Hub) -> None:
    pid3 = f"MRN-3^^^H&{OID_A}&ISO^MR"
    enqueue(hub, oru("O1", pid3, 72))  # a bare Patient for MRN-3 first
    enqueue(hub, adt("A01", "A1", pid3, name="Doe^Jane"))
    enqueue(hub, adt("A08", "A2", pid3, name="Roe^Jane"))
    raws, prepared = prepare_all(hub)
    assert [p.fallback for p in prepared] == [None] * 3
    redone: list[str] = []
    commit_all(hub, raws, prepared, redone)
    assert redone == []
    (patient,) = stored(hub, "Patient")
    assert patient["name"][0]["family"] == "Roe"  # the last message's content, as one by one
    assert bindings(hub, "Patient") == 1
    (obs,) = stored(hub, "Observation")
    assert obs["subject"]["reference"] == f"Patient/{patient['id']}"


def test_a_patient_registered_elsewhere_after_prepare_is_adopted_under_the_lock(
        hub: Hub) -> None:
    enqueue(hub, adt("A01", "A1", f"MRN-4^^^H&{OID_A}&ISO^MR"))
    raws, prepared = prepare_all(hub)
    assert prepared[0].fallback is None
    with write_tx(hub.engine) as conn:  # meanwhile another process binds MRN-4 elsewhere
        registry.register(conn, "Patient", Identifier(SYS_A, "MRN-4"), "registered-elsewhere")
    redone: list[str] = []
    commit_all(hub, raws, prepared, redone)
    assert redone == [raws[0].id]  # the proposal was stale: done again under the lock
    (patient,) = stored(hub, "Patient")
    assert patient["id"] == "registered-elsewhere"
    assert patient["name"] == [{"family": "Doe", "given": ["Jane"]}]


def test_a_merge_makes_what_was_prepared_before_it_stale(hub: Hub) -> None:
    old, new = f"OLD-9^^^H&{OID_A}&ISO^MR", f"NEW-9^^^H&{OID_A}&ISO^MR"
    enqueue(hub, adt("A01", "A1", old))
    enqueue(hub, adt("A01", "A2", new))
    drain(hub.pipeline, hub.engine, 10)
    enqueue(hub, adt("A40", "M1", new, extra=f"MRG|{old}"))
    later = enqueue(hub, oru("O1", old, 72))  # prepared under the epoch before the merge
    raws, prepared = prepare_all(hub)
    assert [p.fallback for p in prepared] == ["patient merges", None]
    redone: list[str] = []
    commit_all(hub, raws, prepared, redone)
    assert redone == [raws[0].id, later]
    with hub.engine.connect() as conn:
        survivor = registry.lookup(conn, "Patient", Identifier(SYS_A, "NEW-9"))
    (obs,) = stored(hub, "Observation")
    assert obs["subject"]["reference"] == f"Patient/{survivor}"


def test_a_device_tree_is_prepared_even_when_a_lookup_source_may_wait_for_it(
        hub: Hub) -> None:
    """The commit releases the quarantined messages waiting for what it registers
    (hub.pipeline.runs), so registering no longer needs the lock path."""
    hub.pipeline.identity_modes = IdentityModes(sources={"other": "lookup"})
    enqueue(hub, oru("O1", f"MRN-5^^^H&{OID_A}&ISO^MR", 72))
    _, [prepared] = prepare_all(hub)
    assert prepared.fallback is None
    assert ("Device", EUI_SYSTEM, EUI_VALUE) in [key for key, _ in prepared.registrations]
    hub.pipeline.identity_modes = IdentityModes(default="lookup")
    enqueue(hub, oru("O2", f"MRN-6^^^H&{OID_A}&ISO^MR", 72))
    _, [prepared, lookup] = prepare_all(hub)
    assert lookup.fallback == "identity lookup mode"


def test_a_patient_written_by_a_prepared_message_is_rewritten_by_a_later_locked_one(
        hub: Hub) -> None:
    """The lock path skips rewriting a Patient whose content this process wrote last; a
    prepared message's write in between must not leave it believing so."""
    pid3 = f"MRN-7^^^H&{OID_A}&ISO^MR"

    def receive(body: bytes, modes: IdentityModes) -> None:
        hub.pipeline.identity_modes = modes
        message_id = enqueue(hub, body)
        drain(hub.pipeline, hub.engine, 10)
        assert inbox.get(hub.engine, message_id)["status"] == "processed"

    locked = IdentityModes(default="lookup")  # (ADT registers in either mode)
    receive(adt("A01", "A1", pid3, name="Doe^Jane"), locked)
    receive(adt("A08", "A2", pid3, name="Roe^Jane"), IdentityModes())  # prepared
    receive(adt("A08", "A3", pid3, name="Doe^Jane"), locked)
    (patient,) = stored(hub, "Patient")
    assert patient["name"][0]["family"] == "Doe"
