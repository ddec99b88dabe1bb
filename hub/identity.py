"""Identity resolution: a measurement's device and patient identifiers → resource ids.

Devices are registered on first sight (create mode). The patient comes from the payload when the
source names one, else from the device's assignment at the reading's time; with neither, the
reading cannot be placed (UnassignedDeviceError → the message is quarantined until an assignment
covering it is added). Found ids are cached per process: identifiers never change their id
except by a merge, which clears the cache.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from hub.contracts import Identifier, Measurement
from hub.errors import UnassignedDeviceError
from hub.fhir.ids import registry_id
from hub.store import inbox, registry, resources
from hub.store.db import write_tx

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
