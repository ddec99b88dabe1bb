"""Registry administration: register devices and patients, assign devices to patients for a
period, end assignments, list them. Used by ``/registry`` (hub.api.registry) and ``hub registry``
(hub.cli.registry); each call is one transaction.

Every change puts back in the queue the quarantined messages waiting for what it touched
(hub.store.quarantine): registering a device or patient, those waiting for any of its
identifiers; assigning or unassigning a device, those waiting for that device. They are processed
again; those still unplaced return to quarantine, waiting for what they still lack. Messages
quarantined before that record existed wait for any change, so every change releases them.
Errors are ``RequestError``s (400/404/409 at the API, one line in the
CLI) whose text never holds a patient identifier's value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy.engine import Connection, Engine

from hub.contracts import Code, Identifier
from hub.errors import ConflictError, NotFoundError, RequestError
from hub.fhir.ids import registry_id
from hub.identity.resolver import IdentityResolver
from hub.store import outbox, quarantine, registry, resources
from hub.store.db import write_tx
from hub.store.registry import Assignment
from hub.store.resources import Written

#: Outbox routing of written resources (``OutboxRouter.route``), so sync delivers them.
Route = Callable[[list[Written], list[dict[str, Any]]], list[tuple[str, Written]]]
Gender = Literal["male", "female", "other", "unknown"]


@dataclass(frozen=True)
class Registered:
    """A registered Device or Patient as stored now."""

    resource: dict[str, Any]
    created: bool  # this call registered it (else it was known and is updated)
    released: int  # quarantined messages put back in the queue (those waiting for it)


@dataclass(frozen=True)
class AssignmentView:
    """An assignment with the identifiers of its device and patient."""

    assignment: Assignment
    device: list[Identifier]
    patient: list[Identifier]
    released: int = 0
    removed: bool = False  # unassign at its start: the period was empty, so it is gone

    def to_json(self) -> dict[str, Any]:
        a = self.assignment
        return {
            "id": a.id, "device": f"Device/{a.device_id}", "patient": f"Patient/{a.patient_id}",
            "start": _iso(a.start), "end": None if a.end is None else _iso(a.end),
            "deviceIdentifier": [_ident_json(i) for i in self.device],
            "patientIdentifier": [_ident_json(i) for i in self.patient],
            "released": self.released, "removed": self.removed,
        }


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _ident_json(ident: Identifier) -> dict[str, str]:
    return {"system": ident.system, "value": ident.value}


def _release(conn: Connection, res_type: str, res_id: str) -> int:
    """Release the quarantined messages waiting for any identifier of ``res_id`` (all of them,
    not only those this change bound: a message may wait under any, e.g. for its assignment)
    or for any change (module docstring); how many."""
    keys = [(res_type, i.system, i.value)
            for i in registry.identifiers_for(conn, res_type, [res_id])[res_id]]
    return quarantine.release(conn, keys)


def _register(conn: Connection, res_type: str, identifiers: list[Identifier],
              fields: dict[str, Any], route: Route | None) -> Registered:
    """Find the resource any of ``identifiers`` is bound to (else a new one with the id create
    mode would give it), bind them all to it, set ``fields`` and store it."""
    if not identifiers:
        raise RequestError(f"a {res_type} needs at least one identifier")
    bound = {found for i in identifiers
             if (found := registry.lookup(conn, res_type, i)) is not None}
    if len(bound) > 1:
        raise ConflictError(f"these identifiers belong to different {res_type}s "
                            f"({', '.join(f'{res_type}/{b}' for b in sorted(bound))}); "
                            "register them separately")
    res_id = next(iter(bound)) if bound else registry_id(res_type, identifiers[0])
    current = resources.read(conn, res_type, res_id)
    resource = current or {"resourceType": res_type, "id": res_id}
    resource.pop("meta", None)
    have = resource.setdefault("identifier", [])
    listed = {(i.get("system"), i.get("value")) for i in have}
    have.extend(_ident_json(i) for i in identifiers if (i.system, i.value) not in listed)
    resource.update({k: v for k, v in fields.items() if v is not None})
    for ident in identifiers:
        registry.bind(conn, res_type, ident, res_id)
    written = resources.upsert(conn, [resource], None)
    if route is not None and written:
        outbox.enqueue(conn, route(written, [resource]))
    stored = resources.read(conn, res_type, res_id)
    assert stored is not None
    return Registered(stored, created=not bound and current is None,
                      released=_release(conn, res_type, res_id))


def register_device(
    engine: Engine, identifiers: list[Identifier], *, device_type: Code | None = None,
    model: str | None = None, manufacturer: str | None = None, route: Route | None = None,
) -> Registered:
    """Register (or update) the Device known by ``identifiers``: FHIR ``type``, ``modelNumber``
    and ``manufacturer`` are set when given, other content kept."""
    type_json = None
    if device_type is not None:
        coding = {"system": device_type.system, "code": device_type.code}
        if device_type.display:
            coding["display"] = device_type.display
        type_json = {"coding": [coding]}
    with write_tx(engine) as conn:
        return _register(conn, "Device", identifiers, {
            "type": type_json, "modelNumber": model, "manufacturer": manufacturer}, route)


def register_patient(
    engine: Engine, identifiers: list[Identifier], *, family: str | None = None,
    given: list[str] | None = None, birth_date: date | None = None,
    gender: Gender | None = None, route: Route | None = None,
) -> Registered:
    """Register (or update) the Patient known by ``identifiers``; a name given replaces the
    recorded names."""
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    with write_tx(engine) as conn:
        return _register(conn, "Patient", identifiers, {
            "name": [name] if name else None, "gender": gender,
            "birthDate": None if birth_date is None else birth_date.isoformat()}, route)


def _registered(conn: Connection, res_type: str, ident: Identifier) -> str:
    found = registry.lookup(conn, res_type, ident)
    if found is None:
        shown = ident.token() if res_type == "Device" else f"system {ident.system}"
        raise NotFoundError(f"no {res_type} is registered with identifier {shown}; register it "
                            "first")
    return found


def _view(conn: Connection, assignments: list[Assignment], released: int = 0,
          removed: bool = False) -> list[AssignmentView]:
    devices = registry.identifiers_for(conn, "Device", (a.device_id for a in assignments))
    patients = registry.identifiers_for(conn, "Patient", (a.patient_id for a in assignments))
    return [AssignmentView(a, devices[a.device_id], patients[a.patient_id], released, removed)
            for a in assignments]


def assign(engine: Engine, device: Identifier, patient: Identifier, start: datetime,
           end: datetime | None = None) -> AssignmentView:
    """Assign a registered device to a registered patient for [start, end). A period sharing an
    instant with another assignment of the device is refused (ConflictError): end that one first
    (``unassign``), so a cuff moves from one patient to the next explicitly."""
    if end is not None and end <= start:
        raise RequestError("the assignment's end must be after its start")
    with write_tx(engine) as conn:
        device_id = _registered(conn, "Device", device)
        patient_id = _registered(conn, "Patient", patient)
        registry.lock_device(conn, device_id)
        clash = registry.overlapping(conn, device_id, start, end)
        if clash:
            c = clash[0]
            until = "open-ended" if c.end is None else f"until {_iso(c.end)}"
            raise ConflictError(
                f"the device is already assigned from {_iso(c.start)} {until} (assignment "
                f"{c.id}, Patient/{c.patient_id}); end that assignment first (unassign at or "
                "before the new start)")
        made = registry.add_assignment(conn, device_id, patient_id, start, end)
        return _view(conn, [made], _release(conn, "Device", device_id))[0]


def unassign(engine: Engine, device: Identifier, at: datetime) -> AssignmentView:
    """End the device's assignment in force at ``at`` there (an assignment starting at ``at``
    is removed: its period would be empty)."""
    with write_tx(engine) as conn:
        device_id = _registered(conn, "Device", device)
        registry.lock_device(conn, device_id)
        current = registry.covering(conn, device_id, at)
        if current is None:
            raise NotFoundError(f"the device has no assignment in force at {_iso(at)}")
        removed = current.start == registry.utc(at)
        if removed:
            registry.delete_assignment(conn, current.id)
            ended = current
        else:
            registry.end_assignment(conn, current.id, at)
            ended = Assignment(current.id, current.device_id, current.patient_id,
                               current.start, registry.utc(at))
        return _view(conn, [ended], _release(conn, "Device", device_id), removed)[0]


def list_assignments(engine: Engine, *, device: Identifier | None = None,
                     patient: Identifier | None = None,
                     at: datetime | None = None) -> list[AssignmentView]:
    """Assignments by device and start; filtered by device, patient, and the instant in force."""
    with engine.connect() as conn:
        device_id = None if device is None else _registered(conn, "Device", device)
        patient_id = None if patient is None else _registered(conn, "Patient", patient)
        return _view(conn, registry.assignments(conn, device_id=device_id,
                                                patient_id=patient_id, at=at))


def assign_device(
    engine: Engine, device: Identifier, patient: Identifier, start: datetime,
    end: datetime | None = None,
) -> int:
    """Register the device and patient if new (create mode), then ``assign``: the programmatic
    short cut (tests, demo). Returns the assignment id."""
    with write_tx(engine) as conn:
        resolver = IdentityResolver({})
        resolver.device(conn, device)
        resolver.patient_by_identifier(conn, patient)
        resources.upsert(conn, resolver.take_new(), None)
    return assign(engine, device, patient, start, end).assignment.id
