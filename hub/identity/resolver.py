"""Identity resolution: a measurement's device and patient identifiers → resource ids.

The patient comes from the payload when the source names one, else from the device's assignment
at the reading's time; with neither, the reading cannot be placed (UnassignedDeviceError → the
message is quarantined until an assignment covering it is added). An identifier not yet in the
registry is registered on first sight in identity mode ``create``; in mode ``lookup`` the reading
waits in quarantine until it is registered (``hub.identity.modes``). What a quarantined
message waits for is the identifier it failed on (``UnassignedDeviceError.waits``); identifiers
this resolver binds for the first time release the messages waiting for them
(``hub.store.quarantine``, when some source is in lookup mode).

Found ids are cached per process (the ``shared`` dict). Identifiers never change their id except
by a patient merge, which bumps the registry epoch in its transaction; each transaction checks
the epoch before it first uses the cache and drops the cache when it moved, so every process
(``hub worker``, ``hub serve``) sees a merge made by any other from its next batch on. On
PostgreSQL the check holds a share lock on the epoch row, and the merge's bump waits for it: a
batch that used the old bindings commits before the merge moves what it wrote.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from hub.contracts import Identifier, Measurement, PatientMerge
from hub.errors import UnassignedDeviceError, UnregisteredIdentityError
from hub.fhir.ids import registry_id
from hub.identity.modes import CREATE, IdentityModes, Mode
from hub.store import merge, quarantine, registry, resources
from hub.store.resources import Written

_CACHE_LIMIT = 100_000
#: The registry epoch the shared cache's entries belong to, kept in the cache itself.
EPOCH_KEY = ("#epoch", "", "")
_SHARED_LOCK = threading.Lock()  # hub serve's worker and request threads share one cache

Cache = dict[tuple[str, str, str], str]


class IdentityResolver:
    """Resolves identifiers within one transaction; call ``committed()`` after commit (or
    ``rolled_back()``). ``begin_message(source)`` sets the source's identity mode."""

    def __init__(self, shared: Cache, modes: IdentityModes | None = None) -> None:
        self._shared = shared  # process-wide, holds only committed bindings
        self._pending: Cache = {}
        self.new_resources: list[dict[str, Any]] = []
        self._modes = modes or IdentityModes()
        self.mode: Mode = self._modes.default
        self._epoch: str | None = None  # the registry epoch this transaction read, once read
        # Keys this transaction holds quarantine.awaiting's lock on: read under it from then on.
        self._awaited: set[quarantine.IdentityKey] = set()

    def begin_message(self, source: str) -> None:
        self.mode = self._modes.of(source)

    def _cached(self, conn: Connection, key: tuple[str, str, str]) -> str | None:
        if self._epoch is None:
            self._check_epoch(conn)
        return self._shared.get(key) or self._pending.get(key)

    def _check_epoch(self, conn: Connection) -> None:
        """Once per transaction: drop the shared cache if a merge moved bindings since it was
        filled (and, on PostgreSQL, keep merges waiting until this transaction ends)."""
        seen = str(registry.epoch(conn, share=True))
        self._epoch = seen
        with _SHARED_LOCK:
            if self._shared.get(EPOCH_KEY) != seen:
                self._shared.clear()
                self._shared[EPOCH_KEY] = seen

    def _resolve(self, conn: Connection, res_type: str, ident: Identifier,
                 create: bool = True) -> str | None:
        key = (res_type, ident.system, ident.value)
        found = self._cached(conn, key)
        if found is not None:
            return found
        found = registry.lookup(conn, res_type, ident)
        if found is None and not create and self._await(conn, key):
            # Quarantined for want of it: read again under the lock a registration releasing
            # for it takes (hub.store.quarantine), so one of the two sees the other.
            found = registry.lookup(conn, res_type, ident)
        if found is None:
            if not create:
                return None
            found = registry.register(conn, res_type, ident, registry_id(res_type, ident))
            self._release_if(conn, [key])  # a lookup-mode source's reading may wait for it
            self.new_resources.append({
                "resourceType": res_type, "id": found,
                "identifier": [{"system": ident.system, "value": ident.value}],
            })
        self._pending[key] = found
        return found

    def device(self, conn: Connection, ident: Identifier) -> str:
        found = self._resolve(conn, "Device", ident, create=self.mode == CREATE)
        if found is None:
            raise UnregisteredIdentityError("unknown device: not in the registry (identity mode "
                                            "lookup)", waits=_key("Device", ident))
        return found

    def patient_by_identifier(self, conn: Connection, ident: Identifier) -> str:
        found = self._resolve(conn, "Patient", ident)
        assert found is not None  # created when new
        return found

    def patient(self, conn: Connection, m: Measurement, device_id: str) -> str:
        if m.patient is not None:
            found = self._resolve(conn, "Patient", m.patient, create=self.mode == CREATE)
            if found is None:
                raise UnregisteredIdentityError("unknown patient: not in the registry (identity "
                                                "mode lookup)", location=m.location,
                                                waits=_key("Patient", m.patient))
            return found
        found = registry.patient_at(conn, device_id, m.time)
        if found is None:
            # The message will wait for an assignment of this device: read again under the lock
            # an assignment releasing for it takes (hub.store.quarantine).
            waits = _key("Device", m.device)
            if self._await(conn, waits):
                found = registry.patient_at(conn, device_id, m.time)
            if found is None:
                raise UnassignedDeviceError("unassigned device", location=m.location, waits=waits)
        return found

    def _await(self, conn: Connection, key: quarantine.IdentityKey) -> bool:
        """Whether what was read of ``key`` must be read again: its lock taken just now (once
        per transaction; SQLite takes none, its one writer already excludes the change)."""
        if key in self._awaited:
            return False
        self._awaited.add(key)
        return quarantine.awaiting(conn, key)

    def adopt(self, conn: Connection, given: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Bind every business identifier of the Patients/Devices a message gives (ADT PID-3,
        PCD-01 EUI-64, FHIR creates) to that resource, in place; returns those that need writing.

        These are registrations, in either identity mode: the message states the resource.
        A resource whose identifier is already registered takes the registered id (and
        references to it among ``given`` follow), so the readings filed under any of its
        identifiers and the resource itself stay one; its other identifiers are bound to that id
        too. An identifier already bound to a different resource keeps its binding (only a merge
        moves identifiers). A resource this process already wrote with the same content is left
        out of the result: a monitor names the same device tree in every message, and rewriting
        it (an upsert that changes nothing) is most of the cost of storing it again.
        """
        renamed: dict[str, str] = {}
        fresh: list[quarantine.IdentityKey] = []
        for res in given:
            rtype, idents = res["resourceType"], registry.identifiers_of(res)
            known = [self._cached(conn, k) for k in ((rtype, i.system, i.value) for i in idents)]
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
                    now, new = registry.bind(conn, rtype, ident, rid)
                    self._pending[(rtype, ident.system, ident.value)] = now
                    if new:
                        fresh.append(_key(rtype, ident))
        if renamed:
            for res in given:
                repoint(res, renamed)
        self._release_if(conn, fresh)
        changed = []
        for res in given:
            key = ("#content", res["resourceType"], res["id"])
            digest = hashlib.blake2b(orjson.dumps(res, option=orjson.OPT_SORT_KEYS),
                                     digest_size=16).hexdigest()
            if self._cached(conn, key) != digest:
                self._pending[key] = digest  # cached only once committed (see committed())
                changed.append(res)
        return changed

    def bind_stated(self, conn: Connection, stated: list[dict[str, Any]]) -> list[str]:
        """Bind the identifiers of Patients/Devices a message writes under their own ids (FHIR
        PUT: the id is the client's and never renamed), so later readings naming them land on
        that resource. An identifier already bound to another resource keeps its binding; the
        returned notes say so (ids only, never identifier values)."""
        notes: list[str] = []
        fresh: list[quarantine.IdentityKey] = []
        for res in stated:
            rtype = res.get("resourceType")
            if rtype not in ("Patient", "Device"):
                continue
            for n, ident in enumerate(registry.identifiers_of(res)):
                key = (rtype, ident.system, ident.value)
                if self._cached(conn, key) == res["id"]:
                    continue
                bound, new = registry.bind(conn, rtype, ident, res["id"])
                self._pending[key] = bound
                if new:
                    fresh.append(key)
                if bound != res["id"]:
                    notes.append(f"{rtype}/{res['id']} identifier[{n}] is already bound to "
                                 f"{rtype}/{bound}: readings naming it go there (only a patient "
                                 "merge moves an identifier)")
        self._release_if(conn, fresh)
        return notes

    def forget_content(self, written: Iterable[tuple[str, str]]) -> None:
        """(type, id) of resources written otherwise than by ``adopt`` (a prepared message's
        Patients/Devices): what ``adopt`` remembers of their content is stale."""
        for res_type, res_id in written:
            if res_type in ("Patient", "Device"):
                key = ("#content", res_type, res_id)
                self._pending.pop(key, None)
                with _SHARED_LOCK:
                    self._shared.pop(key, None)

    def _release_if(self, conn: Connection, fresh: list[quarantine.IdentityKey]) -> None:
        """Identifiers registered here that some lookup-mode source may be waiting for: put the
        quarantined messages waiting for them back in the queue (those still unplaced return to
        quarantine, waiting for what they still lack)."""
        if fresh and self._modes.any_lookup:
            quarantine.release(conn, fresh)

    def apply_merges(self, conn: Connection, merges: list[PatientMerge],
                     message_id: str | None) -> list[Written]:
        """Merge patients (ADT^A40): identifiers move, so the registry epoch advances (every
        process drops its cached bindings) and this transaction resolves from the database."""
        if not merges:
            return []
        self.invalidate(registry.bump_epoch(conn))
        written: list[Written] = []
        for m in merges:
            survivor = self.patient_by_identifier(conn, m.survivor)
            resources.upsert(conn, self.take_new(), message_id)  # a survivor first seen here
            merged = {found for ident in m.merged
                      if (found := registry.lookup(conn, "Patient", ident)) is not None}
            written += merge.merge_patients(conn, survivor, merged, m.merged, message_id)
            # The survivor's and the merged identifiers may be bound only now: the readings
            # waiting for them can be placed.
            self._release_if(conn, [_key("Patient", i) for i in [m.survivor, *m.merged]])
        return written

    def invalidate(self, epoch: int | str | None = None) -> None:
        """Drop cached bindings (this process's at once; other processes at their next check of
        the registry epoch, which the caller bumped to ``epoch``)."""
        self._pending.clear()
        with _SHARED_LOCK:
            self._shared.clear()
            if epoch is not None:
                self._epoch = str(epoch)
                self._shared[EPOCH_KEY] = self._epoch

    def take_new(self) -> list[dict[str, Any]]:
        """Patients/Devices first registered since the last call (to store with the message)."""
        new, self.new_resources = self.new_resources, []
        return new

    def committed(self) -> None:
        with _SHARED_LOCK:
            # Entries read at another epoch than the cache's now may be stale: left out.
            epoch = self._epoch
            if self._pending and epoch is not None and self._shared.get(EPOCH_KEY) == epoch:
                if len(self._shared) > _CACHE_LIMIT:
                    self._shared.clear()
                    self._shared[EPOCH_KEY] = epoch
                self._shared.update(self._pending)
        self._pending.clear()
        self._awaited.clear()
        self.new_resources = []

    def rolled_back(self) -> None:
        self._pending.clear()
        self._awaited.clear()  # a savepoint's rollback releases the locks taken inside it
        self.new_resources = []
        # A savepoint's rollback also releases the epoch share lock taken inside it: check again.
        self._epoch = None


def _key(res_type: str, ident: Identifier) -> quarantine.IdentityKey:
    return (res_type, ident.system, ident.value)


def repoint(node: Any, renamed: dict[str, str]) -> None:
    """Rewrite ``{"reference": old}`` to the new id everywhere inside ``node``."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in renamed:
            node["reference"] = renamed[ref]
        for value in node.values():
            repoint(value, renamed)
    elif isinstance(node, list):
        for value in node:
            repoint(value, renamed)
