"""The prepare phase's data: a message made ready to write, and identity that never writes.

The pipeline (``hub.pipeline``) splits a message's processing in two. *Prepare* does all the
per-reading CPU work — decode, map, resolve identifiers, build the FHIR resources, turn them into
table rows (search columns, content hash, JSON) — reading the database but writing nothing, so on
SQLite it runs outside the single writer's lock, and it can run in another process
(``hub worker --prepare-procs N``). *Commit* writes what was prepared, for many messages at
once, in one transaction.

What prepare read may change before commit. ``StagedResolver`` records what its answers rest
on, so the commit can check them under the lock:

- a binding found in the database (or the process's cache of such) is committed data; it moves
  only by a patient merge, which bumps the committer's *identity epoch*: anything prepared under
  an older epoch is done again under the lock;
- an identifier seen for the first time is *proposed* for registration with its deterministic id
  (``registry_id``); the commit registers it if it is still unbound, else the message is done
  again under the lock.

The Patients/Devices a message gives (HL7v2 ADT PID-3, PCD-01 device trees, FHIR creates) are
adopted the same way: each takes the id already bound to one of its identifiers (read as above),
and its unbound identifiers are proposed for registration under that id. Two messages of one
commit proposing the same binding register it once; a binding made since prepare read the
registry (by another process, or by a message of the same commit processed under the lock)
sends the message to the lock, where ``IdentityResolver.adopt`` does it again.

Whatever prepare cannot decide without writing — a device's assignment at a reading's time,
identifiers of Patients/Devices written under their own ids (FHIR PUT), merges — sends the
message to the lock (``NeedsLock``): it is processed exactly as before, one message inside a
savepoint. (So do messages of sources in identity mode lookup: the pipeline does not prepare
them.) A registration some lookup-mode source may be waiting for needs no lock: the commit
releases the quarantined messages waiting for the identifiers it registers
(``hub.pipeline.runs``, ``hub.store.quarantine``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from hub.contracts import Identifier, Measurement
from hub.fhir.ids import registry_id
from hub.identity.resolver import repoint
from hub.rules import RuleInput
from hub.store import registry
from hub.store.resources import Staged, Written

IdentityKey = tuple[str, str, str]  # (resource type, identifier system, identifier value)
_CACHE_LIMIT = 100_000


class NeedsLock(Exception):
    """This message cannot be prepared without writing: process it under the write lock."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StagedResolver:
    """Identifiers → resource ids for one message, reading the registry, never writing it.

    ``cache`` is process-wide and holds only bindings read from the database (committed ones);
    the identifiers this message sees first are in ``registrations`` and their new
    Patient/Device resources in ``new_resources`` (``take_new``).
    """

    def __init__(self, cache: dict[IdentityKey, str]) -> None:
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        self._cache = cache
        self._proposed: dict[IdentityKey, str] = {}
        self.registrations: list[tuple[IdentityKey, str]] = []
        self.new_resources: list[dict[str, Any]] = []
        self.bare: list[tuple[str, str]] = []  # (type, id) of the resources made for _resolve
        # The last identifier resolved per type, and its id: a payload's readings share one
        # Identifier object when the mapping reads it from the payload's root (hub.mappings.
        # extract), so each reading after the first is an identity test, not a key tuple and
        # two dict lookups (~0.5 us a call, two calls a reading).
        self._last: dict[str, tuple[Identifier, str]] = {}

    def _known(self, conn: Connection, key: IdentityKey, ident: Identifier) -> str | None:
        """The id ``key`` is bound to: proposed by this message, or committed (read, cached)."""
        found = self._cache.get(key) or self._proposed.get(key)
        if found is None:
            found = registry.lookup(conn, key[0], ident)
            if found is not None:
                self._cache[key] = found
        return found

    def _propose(self, key: IdentityKey, res_id: str) -> None:
        self._proposed[key] = res_id
        self.registrations.append((key, res_id))

    def _resolve(self, conn: Connection, res_type: str, ident: Identifier) -> str:
        key = (res_type, ident.system, ident.value)
        found = self._known(conn, key, ident)
        if found is not None:
            return found
        found = registry_id(res_type, ident)
        self._propose(key, found)
        self.bare.append((res_type, found))
        self.new_resources.append({
            "resourceType": res_type, "id": found,
            "identifier": [{"system": ident.system, "value": ident.value}],
        })
        return found

    def begin_message(self, source: str) -> None:
        """Prepare runs only for sources in create mode (the pipeline sends lookup-mode
        sources to the lock, where unknown identifiers are quarantined)."""

    def _resolve_last(self, conn: Connection, res_type: str, ident: Identifier) -> str:
        """``_resolve``, remembered for the same Identifier object (``_resolve`` gives one id
        per identifier for the whole message: what it proposes stays proposed)."""
        last = self._last.get(res_type)
        if last is not None and last[0] is ident:
            return last[1]
        found = self._resolve(conn, res_type, ident)
        self._last[res_type] = (ident, found)
        return found

    def device(self, conn: Connection, ident: Identifier) -> str:
        return self._resolve_last(conn, "Device", ident)

    def patient(self, conn: Connection, m: Measurement, device_id: str) -> str:
        if m.patient is None:
            raise NeedsLock("device assignment")  # assignments are read under the lock
        return self._resolve_last(conn, "Patient", m.patient)

    def adopt(self, conn: Connection, given: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``IdentityResolver.adopt`` without writing: each resource takes the id bound to the
        first of its identifiers that is bound (references among ``given`` follow), and its
        unbound identifiers are proposed under that id (an identifier bound to another resource
        keeps its binding). All of ``given`` is returned: whether this process wrote the same
        content is known only to the committer (an unchanged row costs the upsert a lookup)."""
        renamed: dict[str, str] = {}
        for res in given:
            rtype = res["resourceType"]
            idents = registry.identifiers_of(res)
            keys = [(rtype, i.system, i.value) for i in idents]
            known = [self._known(conn, k, i) for k, i in zip(keys, idents, strict=True)]
            rid = next((k for k in known if k is not None), None) or res["id"]
            if rid != res["id"]:
                renamed[f"{rtype}/{res['id']}"] = f"{rtype}/{rid}"
                res["id"] = rid
            for key, found in zip(keys, known, strict=True):
                if found is None and key not in self._proposed:
                    self._propose(key, rid)
        if renamed:
            for res in given:
                repoint(res, renamed)
        return given

    def bind_stated(self, conn: Connection, stated: list[dict[str, Any]]) -> list[str]:
        if any(r.get("resourceType") in ("Patient", "Device") for r in stated):
            raise NeedsLock("patients or devices stated")  # binding them writes the registry
        return []

    def take_new(self) -> list[dict[str, Any]]:
        new, self.new_resources = self.new_resources, []
        return new


@dataclass(slots=True)
class Prepared:
    """One message after the prepare phase (picklable: it crosses processes).

    ``fallback`` says why the message must instead be processed whole under the write lock;
    then nothing else is set. ``registrations`` are the identifier bindings it proposes (checked
    and made by the commit). ``new`` are the keys of the bare Patients/Devices (identifier only)
    it makes for identifiers first seen in its readings, dropped if an earlier message of the
    same commit registered them (that one may have written the resource with more content);
    the Patients/Devices a message gives are always written. ``refs`` is the lineage (its
    resources) as the JSON the inbox stores. ``rules`` is what the rules read of its
    Observations (``RulesStage.read``); should the rules have changed since, the committer
    reads the Observations back from the rows. ``replies`` are the outbox rows owed to its
    sender (HL7v2 deferred application ACKs).
    """

    message_id: str
    source: str
    traceparent: str | None
    epoch: int
    fallback: str | None = None
    status: str = ""
    error_text: str | None = None
    notes_text: str | None = None
    dead_letter: bool = False
    staged: Staged = field(default_factory=Staged)
    refs: str | None = None
    registrations: list[tuple[IdentityKey, str]] = field(default_factory=list)
    new: list[tuple[str, str]] = field(default_factory=list)
    rules: RuleInput | None = None
    replies: list[tuple[str, Written]] = field(default_factory=list)
