"""``/rules``: the rules program, per-patient overrides, and a patient's explanation.

- ``GET /rules``: every rule with its version, kind, file, source and parameters.
- ``GET /rules/patients/{id}``: what ``hub rules explain`` prints (baselines, active Flags and
  why).
- ``GET|PUT|DELETE /rules/overrides/{patient}/{rule}``: one patient's parameters for one rule,
  a merge patch of the rule (hub/rules/overrides.py: objects merged as RFC 7396, triggers,
  escalation levels, notices, CGM targets and codes merged by key; e.g.
  ``{"any": [{"measure": "systolic", "at_or_above": 170}]}``, ``{"enabled": false}`` or
  ``{"times": ["08:00", "20:00"]}``), validated as the rule files are; 422 says what is wrong.
  The answer shows the rule as it now applies (``effective``). A time-based rule is scheduled
  at once so a new schedule takes effect.
- ``GET|PUT|DELETE /rules/patients/{patient}/settings``: the patient's own settings for every
  rule, ``{"timezone": "America/New_York"}`` (IANA): their local days (days with data, CGM
  days, daily weights) and dose times. Without one, the program's time zone applies.
- ``PUT /rules/overrides/{patient}/{rule}/from-request/{MedicationRequest id}``: a medication
  rule's dose times and medication from a stored MedicationRequest.

Overrides change clinical behaviour, so every route needs an API key scoped to all sources
(``*``), the hub's administrative scope.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Response
from fastapi.concurrency import run_in_threadpool

from hub.api.deps import ClientDep, HubDep
from hub.api.errors import ApiError
from hub.rules import store as rule_store
from hub.rules.engine import RulesEngine
from hub.rules.explain import explain
from hub.rules.kinds.medication import schedule_from_request
from hub.rules.model import PatientSettings
from hub.rules.program import changed_fields, with_override
from hub.runtime import Hub
from hub.store import resources
from hub.store.api_keys import Client
from hub.store.db import write_tx

router = APIRouter(prefix="/rules", tags=["rules"])


def _engine(hub: Hub, client: Client) -> RulesEngine:
    if "*" not in client.sources:
        raise ApiError(403, "rules and overrides need an API key scoped to all sources (*)")
    engine = hub.pipeline.rules
    if not isinstance(engine, RulesEngine):
        raise ApiError(409, "no rules engine is configured in this hub")
    return engine


def _check_patient(hub: Hub, patient: str) -> None:
    with hub.engine.connect() as conn:
        if resources.read(conn, "Patient", patient) is None:
            raise ApiError(404, f"no Patient/{patient}")


@router.get("")
async def list_rules(hub: HubDep, client: ClientDep) -> dict[str, Any]:
    """The program: every rule, its version, file, source and parameters."""
    program = _engine(hub, client).program
    return {"rules": [{"id": rid, "version": program.versions[rid], "file": program.files[rid],
                       **rule.model_dump(mode="json")} for rid, rule in program.rules.items()]}


@router.get("/patients/{patient}")
async def explain_patient(patient: str, hub: HubDep, client: ClientDep) -> dict[str, Any]:
    """Baselines, rule states, active Flags and why they exist, next scheduled runs."""
    engine = _engine(hub, client)

    def run() -> dict[str, Any]:
        _check_patient(hub, patient)
        with hub.engine.connect() as conn:
            return explain(engine, conn, patient)

    return await run_in_threadpool(run)


@router.get("/overrides/{patient}")
async def get_overrides(patient: str, hub: HubDep, client: ClientDep) -> dict[str, Any]:
    _engine(hub, client)

    def run() -> dict[str, Any]:
        with hub.engine.connect() as conn:
            return rule_store.overrides_of(conn, patient)

    return {"patient": patient, "overrides": await run_in_threadpool(run)}


def _store(hub: Hub, engine: RulesEngine, client: Client, patient: str, rule_id: str,
           params: dict[str, Any]) -> dict[str, Any]:
    rule = engine.program.rules.get(rule_id)
    if rule is None:
        raise ApiError(404, f"no rule '{rule_id}'")
    try:
        effective = with_override(rule, params)
    except ValueError as exc:
        raise ApiError(422, f"override refused: {exc}") from None
    _check_patient(hub, patient)
    with write_tx(hub.engine) as conn:
        rule_store.put_override(conn, patient, rule_id, params, client.name)
        if rule_id in engine.program.time_based:
            engine.schedule_now(conn, patient, rule_id)
    return {"patient": patient, "rule": rule_id, "override": params,
            "changes": changed_fields(rule, effective),
            "effective": effective.model_dump(mode="json")}


@router.put("/overrides/{patient}/{rule_id}")
async def put_override(patient: str, rule_id: str, hub: HubDep, client: ClientDep,
                       params: dict[str, Any] = Body(..., examples=[{"enabled": False}])  # noqa: B008
                       ) -> dict[str, Any]:
    """Set one patient's override of one rule: a merge patch of the rule (replaces any previous
    override of this rule for this patient)."""
    engine = _engine(hub, client)
    return await run_in_threadpool(_store, hub, engine, client, patient, rule_id, params)


@router.put("/overrides/{patient}/{rule_id}/from-request/{request_id}")
async def override_from_request(patient: str, rule_id: str, request_id: str, hub: HubDep,
                                client: ClientDep) -> dict[str, Any]:
    """A medication rule's times and medication from a stored MedicationRequest."""
    engine = _engine(hub, client)

    def run() -> dict[str, Any]:
        with hub.engine.connect() as conn:
            request = resources.read(conn, "MedicationRequest", request_id)
            current = rule_store.overrides_of(conn, patient).get(rule_id, {})
        if request is None:
            raise ApiError(404, f"no MedicationRequest/{request_id}")
        try:
            params = {**current, **schedule_from_request(request)}
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        return _store(hub, engine, client, patient, rule_id, params)

    return await run_in_threadpool(run)


@router.delete("/overrides/{patient}/{rule_id}", status_code=204)
async def delete_override(patient: str, rule_id: str, hub: HubDep, client: ClientDep
                          ) -> Response:
    """Back to the program's parameters for this patient."""
    _engine(hub, client)

    def run() -> bool:
        with write_tx(hub.engine) as conn:
            return rule_store.delete_override(conn, patient, rule_id)

    if not await run_in_threadpool(run):
        raise ApiError(404, f"no override of '{rule_id}' for Patient/{patient}")
    return Response(status_code=204)


@router.get("/patients/{patient}/settings")
async def get_settings(patient: str, hub: HubDep, client: ClientDep) -> dict[str, Any]:
    """The patient's own settings (time zone); the program's zone applies without one."""
    engine = _engine(hub, client)

    def run() -> dict[str, Any]:
        with hub.engine.connect() as conn:
            return rule_store.settings_of(conn, patient)

    settings = await run_in_threadpool(run)
    return {"patient": patient, "settings": settings,
            "timezone": settings.get("timezone") or engine.program.timezone}


@router.put("/patients/{patient}/settings")
async def put_settings(patient: str, hub: HubDep, client: ClientDep,
                       body: dict[str, Any] = Body(  # noqa: B008
                           ..., examples=[{"timezone": "America/New_York"}])) -> dict[str, Any]:
    """Set the patient's own settings; every time-based rule is rescheduled for the new zone."""
    engine = _engine(hub, client)
    try:
        settings = PatientSettings.model_validate(body)
    except ValueError as exc:
        raise ApiError(422, f"settings refused: {_first_error(exc)}") from None
    params = settings.model_dump(exclude_none=True)

    def run() -> None:
        _check_patient(hub, patient)
        with write_tx(hub.engine) as conn:
            rule_store.put_override(conn, patient, rule_store.SETTINGS, params, client.name)
            for rule_id in engine.program.time_based:
                engine.schedule_now(conn, patient, rule_id)

    await run_in_threadpool(run)
    return {"patient": patient, "settings": params,
            "timezone": params.get("timezone") or engine.program.timezone}


@router.delete("/patients/{patient}/settings", status_code=204)
async def delete_settings(patient: str, hub: HubDep, client: ClientDep) -> Response:
    """Back to the program's time zone for this patient."""
    engine = _engine(hub, client)

    def run() -> bool:
        with write_tx(hub.engine) as conn:
            found = rule_store.delete_override(conn, patient, rule_store.SETTINGS)
            if found:
                for rule_id in engine.program.time_based:
                    engine.schedule_now(conn, patient, rule_id)
            return found

    if not await run_in_threadpool(run):
        raise ApiError(404, f"no settings for Patient/{patient}")
    return Response(status_code=204)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        return f"{where}: {first['msg']}"
    return str(exc)
