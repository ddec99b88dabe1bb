"""Prepare, then commit many messages together: the outcome is the one of processing them one by
one, in order (hub.pipeline, hub.staging), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from connectors.hub_reading import HubReadingConnector
from hub.contracts import Extraction, Identifier, MeasurementExtractor
from hub.fhir.ids import registry_id
from hub.identity import IdentityResolver
from hub.pipeline import Pipeline
from hub.registry import ConnectorRegistry
from hub.runtime import Hub
from hub.store import inbox, registry
from hub.store.db import write_tx
from hub.store.models import Resource
from hub.worker import drain
from tests.readings import canonical

DEVICE_SYSTEM = "urn:iomt-fhir-hub:device"
ONE_BY_ONE = "one by one instead"


def post(hub: Hub, body: dict[str, Any], source: str = "hub") -> str:
    return inbox.receive(hub.engine, source=source, channel="http",
                         content_type="application/json", body=orjson.dumps(body)).message_id


def stored(hub: Hub, res_type: str) -> list[Any]:
    with hub.engine.connect() as conn:
        return list(conn.execute(select(Resource.res_id, Resource.version_id, Resource.message_id,
                                        Resource.content)
                                 .where(Resource.res_type == res_type)
                                 .order_by(Resource.effective)).all())


def test_a_new_device_in_several_messages_of_one_batch_is_registered_and_written_once(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.pipeline")
    messages = [post(hub, canonical(2, device="batch-dev", patient="batch-pat", start=2 * n))
                for n in range(3)]
    assert drain(hub.pipeline, hub.engine, 10) == 3
    assert ONE_BY_ONE not in caplog.text  # written together, not message by message
    device_id = registry_id("Device", Identifier(DEVICE_SYSTEM, "batch-dev"))
    [(rid, version, message_id, _)] = stored(hub, "Device")
    assert (rid, version, message_id) == (device_id, 1, messages[0])
    assert len(stored(hub, "Observation")) == 6
    lineages = [inbox.get(hub.engine, m) for m in messages]
    assert [lin["status"] for lin in lineages] == ["processed"] * 3
    # as one by one: the message that registered the device lists it, the later ones do not
    assert f"Device/{device_id}" in lineages[0]["resources"]
    assert all(f"Device/{device_id}" not in lin["resources"] for lin in lineages[1:])
    assert all(sum(r.startswith("Observation/") for r in lin["resources"]) == 2
               for lin in lineages)


def test_the_same_reading_twice_in_a_batch_is_one_version_from_the_first_message(
    hub: Hub
) -> None:
    first = post(hub, canonical(2, device="dup-dev", start=0))
    post(hub, canonical(2, device="dup-dev", start=1))  # its first reading repeats one
    drain(hub.pipeline, hub.engine, 10)
    rows = stored(hub, "Observation")
    assert [(version, message) for _, version, message, _ in rows][:2] == [(1, first)] * 2
    assert len(rows) == 3


def test_a_reading_changed_by_a_later_message_of_the_batch_gets_a_second_version(
    hub: Hub
) -> None:
    body = canonical(1, device="change-dev")
    post(hub, body)
    body["readings"][0]["value"] = 99
    second = post(hub, body)
    drain(hub.pipeline, hub.engine, 10)
    [(_, version, message_id, content)] = stored(hub, "Observation")
    assert (version, message_id) == (2, second)
    assert orjson.loads(content)["valueQuantity"]["value"] == 99


class BadCodingConnector(HubReadingConnector):
    """A real connector with a bug: for one device it also gives an Observation whose second
    coding's code is an object, which no database column can hold."""

    name = "badcoding"

    @property
    def mapping_name(self) -> str:
        return "hub"

    def extract(self, document: Any, mappings: MeasurementExtractor) -> Extraction:
        extraction = super().extract(document, mappings)
        if document["device"]["id"] == "breaks-the-write":
            extraction.resources.append({
                "resourceType": "Observation", "id": "bad-coding", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"},
                                    {"system": "urn:x", "code": {"not": "a string"}}]}})
        return extraction


def test_a_bug_in_a_combined_write_fails_only_its_message(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.pipeline")
    pipeline = Pipeline(connectors=ConnectorRegistry({"badcoding": BadCodingConnector()}),
                        mappings=hub.mappings)
    good = post(hub, canonical(2, device="fine-1"), "badcoding")
    bad = post(hub, canonical(2, device="breaks-the-write", start=5), "badcoding")
    later = post(hub, canonical(2, device="fine-2", start=10), "badcoding")
    drain(pipeline, hub.engine, 10)
    assert ONE_BY_ONE in caplog.text  # the combined write failed, and was redone one by one
    assert inbox.get(hub.engine, good)["status"] == "processed"
    assert inbox.get(hub.engine, later)["status"] == "processed"
    failed = inbox.get(hub.engine, bad)
    assert failed["status"] == "failed" and failed["error"].startswith("internal error")
    assert len(stored(hub, "Observation")) == 4  # the failed message wrote nothing


def test_an_identifier_bound_after_prepare_sends_the_message_to_the_lock(hub: Hub) -> None:
    message_id = post(hub, canonical(2, device="raced-dev"))
    with hub.engine.connect() as conn:
        [raw] = inbox.claim(conn, 10, lock=False)
        prepared = hub.pipeline.prepare(conn, raw)
        conn.rollback()
    assert [key for key, _ in prepared.registrations] == [
        ("Device", DEVICE_SYSTEM, "raced-dev"), ("Patient", "urn:iomt-fhir-hub:patient", "pat-1")]
    with write_tx(hub.engine) as conn:  # meanwhile another process binds it to another id
        registry.register(conn, "Device", Identifier(DEVICE_SYSTEM, "raced-dev"), "other-device")
    resolver = IdentityResolver(hub.pipeline.identity_cache)
    with write_tx(hub.engine) as conn:
        assert inbox.take(conn, [message_id]) == {message_id}
        outcomes = hub.pipeline.commit(conn, [prepared], lambda _: raw, resolver)
    resolver.committed()
    assert outcomes == [("hub", "processed")]
    devices = {orjson.loads(content)["device"]["reference"]
               for _, _, _, content in stored(hub, "Observation")}
    assert devices == {"Device/other-device"}  # processed under the lock: the binding holds


def test_a_message_processed_meanwhile_is_not_taken_again(hub: Hub) -> None:
    message_id = post(hub, canonical(1, device="taken-dev"))
    with hub.engine.connect() as conn:
        [raw] = inbox.claim(conn, 10, lock=False)  # read, not locked: another worker may run
        conn.rollback()
    assert drain(hub.pipeline, hub.engine, 10) == 1
    with write_tx(hub.engine) as conn:
        assert inbox.take(conn, [raw.id]) == set()
    assert inbox.get(hub.engine, message_id)["attempts"] == 1
