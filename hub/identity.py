"""Identity resolution: a measurement's device and patient identifiers → resource ids.

Devices are registered on first sight (create mode). The patient comes from the payload when the
source names one, else from the device's assignment at the reading's time; with neither, the
reading cannot be placed (UnassignedDeviceError → the message is quarantined until an assignment
covering it is added). Found ids are cached per process: identifiers never change their id
except by a merge, which clears the cache.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.engine import Connection, Engine

from hub.contracts import Identifier, Measurement, PatientMerge
from hub.errors import UnassignedDeviceError
from hub.fhir.ids import registry_id
from hub.store import inbox, merge, registry, resources
from hub.store.db import write_tx
from hub.store.resources import Written

_CACHE_LIMIT = 100_000


class IdentityResolver:
    """Resolves identifiers within one transaction; call ``committed()`` after commit."""

    def __init__(self, shared: dict[tuple[str, str, str], str]) -> None:
        self._shared = shared  # process-wide, holds only committed bindings
        self._pending: dict[tuple[str, str, str], str] = {}
        self.new_resources: list[dict[str, Any]] = []

    def _resolve(self, conn: Connection, res_type: str, ident: Identifier) -> str:
        key = (res_type, ident.system, ident.value)
        found = self._shared.get(key) or self._pending.get(key)
        if found is not None:
            return found
        found = registry.lookup(conn, res_type, ident)
        if found is None:
            found = registry.register(conn, res_type, ident, registry_id(res_type, ident))
            self.new_resources.append({
                "resourceType": res_type, "id": found,
                "identifier": [{"system": ident.system, "value": ident.value}],
            })
        self._pending[key] = found
        return found

    def device(self, conn: Connection, ident: Identifier) -> str:
        return self._resolve(conn, "Device", ident)

    def patient_by_identifier(self, conn: Connection, ident: Identifier) -> str:
        return self._resolve(conn, "Patient", ident)

    def patient(self, conn: Connection, m: Measurement, device_id: str) -> str:
        if m.patient is not None:
            return self._resolve(conn, "Patient", m.patient)
        found = self._assigned(conn, device_id, m.time)
        if found is None:
            raise UnassignedDeviceError("unassigned device", location=m.location)
        return found

    def _assigned(self, conn: Connection, device_id: str, when: datetime) -> str | None:
        return registry.patient_at(conn, device_id, when)

    def adopt(self, conn: Connection, given: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Bind every business identifier of the Patients/Devices a message gives (ADT PID-3,
        PCD-01 EUI-64) to that resource, in place; returns those that need writing.

        A resource whose identifier is already registered takes the registered id (and
        references to it among ``given`` follow), so the readings filed under any of its
        identifiers and the resource itself stay one; its other identifiers are bound to that id
        too. An identifier already bound to a different resource keeps its binding (only a merge
        moves identifiers). A resource this process already wrote with the same content is left
        out of the result: a monitor names the same device tree in every message, and rewriting
        it (an upsert that changes nothing) is most of the cost of storing it again.
        """
        renamed: dict[str, str] = {}
        for res in given:
            rtype, idents = res["resourceType"], registry.identifiers_of(res)
            known = [self._shared.get(k) or self._pending.get(k)
                     for k in ((rtype, i.system, i.value) for i in idents)]
            bound = next((k for k in known if k is not None), None)
            for ident in idents if bound is None else ():
                bound = registry.lookup(conn, rtype, ident)
                if bound is not None:
                    break
            rid = bound or res["id"]
            if rid != res["id"]:
                renamed[f"{rtype}/{res['id']}"] = f"{rtype}/{rid}"
                res["id"] = rid
            for ident, cached in zip(idents, known, strict=True):
                if cached != rid:
                    self._pending[(rtype, ident.system, ident.value)] = registry.register(
                        conn, rtype, ident, rid)
        if renamed:
            for res in given:
                _repoint(res, renamed)
        changed = []
        for res in given:
            key = ("#content", res["resourceType"], res["id"])
            digest = hashlib.blake2b(orjson.dumps(res, option=orjson.OPT_SORT_KEYS),
                                     digest_size=16).hexdigest()
            if (self._shared.get(key) or self._pending.get(key)) != digest:
                self._pending[key] = digest  # cached only once committed (see committed())
                changed.append(res)
        return changed

    def apply_merges(self, conn: Connection, merges: list[PatientMerge],
                     message_id: str | None) -> list[Written]:
        """Merge patients (ADT^A40) and forget every cached binding: identifiers moved."""
        written: list[Written] = []
        for m in merges:
            survivor = self._resolve(conn, "Patient", m.survivor)
            resources.upsert(conn, self.take_new(), message_id)  # a survivor first seen here
            merged = {found for ident in m.merged
                      if (found := registry.lookup(conn, "Patient", ident)) is not None}
            written += merge.merge_patients(conn, survivor, merged, m.merged, message_id)
        if merges:
            self.invalidate()
        return written

    def invalidate(self) -> None:
        """Drop cached bindings (this process's; other processes see moved bindings once their
        own cache misses or is cleared — see README § HL7v2 feeds)."""
        self._shared.clear()
        self._pending.clear()

    def take_new(self) -> list[dict[str, Any]]:
        """Patients/Devices first registered since the last call (to store with the message)."""
        new, self.new_resources = self.new_resources, []
        return new

    def committed(self) -> None:
        if len(self._shared) > _CACHE_LIMIT:
            self._shared.clear()
        self._shared.update(self._pending)
        self._pending.clear()
        self.new_resources = []

    def rolled_back(self) -> None:
        self._pending.clear()
        self.new_resources = []


def _repoint(node: Any, renamed: dict[str, str]) -> None:
    """Rewrite ``{"reference": old}`` to the new id everywhere inside ``node``."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in renamed:
            node["reference"] = renamed[ref]
        for value in node.values():
            _repoint(value, renamed)
    elif isinstance(node, list):
        for value in node:
            _repoint(value, renamed)


def assign_device(
    engine: Engine, device: Identifier, patient: Identifier, start: datetime,
    end: datetime | None = None,
) -> int:
    """Assign a device to a patient for [start, end), registering both identifiers if new, and
    put quarantined messages back in the queue so readings that waited for this assignment are
    processed now (those still unplaced return to quarantine). Returns the assignment id."""
    with write_tx(engine) as conn:
        resolver = IdentityResolver({})
        device_id = resolver.device(conn, device)
        patient_id = resolver.patient_by_identifier(conn, patient)
        resources.upsert(conn, resolver.take_new(), None)
        assignment = registry.assign(conn, device_id, patient_id, start, end)
        inbox.requeue_in(conn, status=inbox.STATUS_QUARANTINED)
    return assignment
