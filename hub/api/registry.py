"""``/registry``: the identity registry over HTTP (what ``hub registry`` does on the command line).

- ``POST /registry/devices``: register or update a Device by identifier(s); 201 new, 200 known.
- ``POST /registry/patients``: register or update a Patient by identifier(s); 201 / 200.
- ``POST /registry/assignments``: assign a registered device to a registered patient for
  [start, end); 409 when it overlaps another assignment of the device.
- ``POST /registry/unassign``: end the device's assignment in force at ``at`` (default now).
- ``GET /registry/assignments?device=system|value&patient=system|value&at=instant``.

Every change puts back in the queue the quarantined messages waiting for what it touched (a
device's or patient's identifiers; a device's assignments: hub.store.quarantine), and
``released`` counts them. Every route
needs an API key with the ``registry`` scope (``hub keys create --source registry``) or ``*``:
assignments decide whose record a reading lands in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.contracts import Code, Identifier
from hub.errors import RequestError
from hub.identity import admin
from hub.identity.admin import Gender, Registered
from hub.store.api_keys import Client

router = APIRouter(prefix="/registry", tags=["registry"])

SCOPE = "registry"
T = TypeVar("T")


def require_registrar(client: ClientDep) -> Client:
    if not client.may_post(SCOPE):
        raise ApiError(403, f"registry administration needs an API key with the '{SCOPE}' scope "
                            f"(hub keys create --source {SCOPE}) or '*'")
    return client


Registrar = Depends(require_registrar)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IdentifierIn(_Body):
    system: str = Field(min_length=1, max_length=200, examples=["urn:acme:serial"])
    value: str = Field(min_length=1, max_length=200, examples=["AC-2291"])

    def to_identifier(self) -> Identifier:
        return Identifier(self.system, self.value)


class CodingIn(_Body):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None


class DeviceIn(_Body):
    identifier: list[IdentifierIn] = Field(min_length=1, description="bound to this Device")
    type: CodingIn | None = Field(None, description="Device.type, e.g. an MDC or SNOMED code")
    model: str | None = Field(None, min_length=1, description="Device.modelNumber")
    manufacturer: str | None = Field(None, min_length=1)


class PatientIn(_Body):
    identifier: list[IdentifierIn] = Field(min_length=1, description="bound to this Patient")
    family: str | None = Field(None, min_length=1)
    given: list[Annotated[str, Field(min_length=1)]] | None = None
    birthDate: date | None = Field(None, description="FHIR Patient.birthDate")
    gender: Gender | None = None


class AssignmentIn(_Body):
    device: IdentifierIn
    patient: IdentifierIn
    start: AwareDatetime = Field(description="with an offset; the period is [start, end)")
    end: AwareDatetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AssignmentIn:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class UnassignIn(_Body):
    device: IdentifierIn
    at: AwareDatetime | None = Field(None, description="when the device left the patient "
                                                       "(default: now)")


async def _run(fn: Callable[[], T]) -> T:
    try:
        return await run_in_threadpool(fn)
    except RequestError as exc:
        raise ApiError(exc.status, exc.message, code=exc.code) from None


def _registered(request: Request, found: Registered, key: str) -> JSONResponse:
    res = found.resource
    return JSONResponse(
        {key: res, "created": found.created, "released": found.released},
        status_code=201 if found.created else 200,
        headers={"Location": f"{request.base_url}fhir/{res['resourceType']}/{res['id']}"})


@router.post("/devices", dependencies=[Registrar], status_code=201)
async def register_device(body: DeviceIn, request: Request, hub: HubDep) -> JSONResponse:
    """Register a Device (or update the one its identifiers are bound to)."""
    kind = None if body.type is None else Code(body.type.system, body.type.code,
                                                body.type.display)
    found = await _run(lambda: admin.register_device(
        hub.engine, [i.to_identifier() for i in body.identifier], device_type=kind,
        model=body.model, manufacturer=body.manufacturer, route=hub.pipeline.router.route))
    return _registered(request, found, "device")


@router.post("/patients", dependencies=[Registrar], status_code=201)
async def register_patient(body: PatientIn, request: Request, hub: HubDep) -> JSONResponse:
    """Register a Patient (or update the one its identifiers are bound to)."""
    found = await _run(lambda: admin.register_patient(
        hub.engine, [i.to_identifier() for i in body.identifier], family=body.family,
        given=body.given, birth_date=body.birthDate, gender=body.gender,
        route=hub.pipeline.router.route))
    return _registered(request, found, "patient")


@router.post("/assignments", dependencies=[Registrar], status_code=201)
async def assign(body: AssignmentIn, hub: HubDep) -> dict[str, Any]:
    """Assign a registered device to a registered patient for [start, end)."""
    made = await _run(lambda: admin.assign(hub.engine, body.device.to_identifier(),
                                           body.patient.to_identifier(), body.start, body.end))
    return made.to_json()


@router.post("/unassign", dependencies=[Registrar])
async def unassign(body: UnassignIn, hub: HubDep) -> dict[str, Any]:
    """End the device's assignment in force at ``at`` (default now) there."""
    at = body.at or datetime.now(UTC)
    ended = await _run(lambda: admin.unassign(hub.engine, body.device.to_identifier(), at))
    return ended.to_json()


def _token(name: str, text: str | None) -> Identifier | None:
    if text is None:
        return None
    system, sep, value = text.partition("|")
    if not (sep and system and value):
        raise ApiError(400, f"{name} must be system|value", expression=[name])
    return Identifier(system, value)


@router.get("/assignments", dependencies=[Registrar])
async def list_assignments(
    hub: HubDep,
    device: Annotated[str | None, Query(description="system|value")] = None,
    patient: Annotated[str | None, Query(description="system|value")] = None,
    at: Annotated[AwareDatetime | None, Query(description="only those in force then")] = None,
) -> dict[str, Any]:
    """Assignments (by device, then start) with their devices' and patients' identifiers."""
    dev, pat = _token("device", device), _token("patient", patient)
    found = await _run(lambda: admin.list_assignments(hub.engine, device=dev, patient=pat, at=at))
    return {"assignments": [a.to_json() for a in found]}
