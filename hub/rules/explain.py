"""``hub rules explain PATIENT``: current baselines, and why each active Flag exists.

Reads the patient's rule states, overrides and schedule (no history scan) and asks each rule
kind to describe its state. Patients are named by resource id, by ``system|value`` or by a
value of the hub's own patient system (``urn:iomt-fhir-hub:patient``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from hub.contracts import Identifier
from hub.rules import store
from hub.rules.engine import RulesEngine
from hub.rules.kinds import KINDS
from hub.rules.kinds.base import when
from hub.rules.lifecycle import Ctx
from hub.rules.program import changed_fields
from hub.store import registry
from hub.store import resources as resource_store

DEFAULT_PATIENT_SYSTEM = "urn:iomt-fhir-hub:patient"


def resolve_patient(conn: Connection, name: str) -> str | None:
    """A Patient resource id for ``name`` (id, ``system|value`` or a hub patient value)."""
    if resource_store.read(conn, "Patient", name) is not None:
        return name
    system, _, value = name.rpartition("|") if "|" in name else (DEFAULT_PATIENT_SYSTEM, "",
                                                                 name)
    return registry.lookup(conn, "Patient", Identifier(system, value))


def explain(engine: RulesEngine, conn: Connection, patient: str) -> dict[str, Any]:
    """Per rule: version, override (as given, and the fields it changes), state in words, the
    active Flag and its reason, next run; and the patient's time zone."""
    program = engine.program
    states = store.states_of(conn, patient)
    overrides = store.overrides_of(conn, patient)
    settings = store.settings_of(conn, patient)
    zone = program.patient_zone(orjson.dumps(settings).decode()) if settings else None
    due = store.next_due(conn, patient)
    report: dict[str, Any] = {"patient": patient, "rules": [],
                              "timezone": zone or f"{program.timezone} (the program's)"}
    for rule_id, base in program.rules.items():
        params = overrides.get(rule_id)
        try:
            eff = program.effective(rule_id, orjson.dumps(params).decode() if params else None,
                                    zone)
        except ValueError as exc:
            eff = program.effective(rule_id, None, zone)
            params = {"ignored": str(exc), **(params or {})}
        rule = eff.rule
        text = states.get(rule_id)
        entry: dict[str, Any] = {"rule": rule_id, "version": program.versions[rule_id],
                                 "title": rule.title, "enabled": rule.enabled}
        if params:
            entry["override"] = params
            entry["effective"] = changed_fields(base, rule)
        if not text or text == "{}":
            entry["state"] = "no readings for this rule yet"
        else:
            st = orjson.loads(text)
            ctx = Ctx(patient, rule, program.versions[rule_id], program.care_team,
                      program.measures, eff.tz)
            entry["state"] = KINDS[rule.kind].explain(ctx, st)
            flag = (st.get("alert") or {}).get("flag")
            if flag is not None:
                entry["active flag"] = {
                    "id": flag["id"], "since": when(flag["start"]),
                    "priority": flag["priority"], "why": flag["finding"]["summary"],
                    "evidence": flag["finding"].get("evidence", []),
                    "clearing since": when(flag["cleared"]) if flag.get("cleared") else None}
        if rule_id in due:
            entry["next scheduled run"] = due[rule_id].astimezone(UTC).strftime(
                "%Y-%m-%d %H:%MZ")
        report["rules"].append(entry)
    report["generated"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%MZ")
    return report


def as_text(report: dict[str, Any]) -> str:
    """The report for a terminal: active Flags first, then every rule's state."""
    lines = [f"Patient/{report['patient']}", f"Time zone: {report['timezone']}"]
    active = [r for r in report["rules"] if "active flag" in r]
    lines.append(f"Active flags: {len(active)}")
    for entry in active:
        flag = entry["active flag"]
        lines.append(f"  [{flag['priority']}] {entry['rule']} v{entry['version']} since "
                     f"{flag['since']} (Flag/{flag['id']})")
        lines.append(f"      why: {flag['why']}")
        if flag["evidence"]:
            lines.append(f"      evidence: {', '.join(flag['evidence'])}")
        if flag["clearing since"]:
            lines.append(f"      condition clear since {flag['clearing since']}")
    lines.append("Rules:")
    for entry in report["rules"]:
        state = entry["state"]
        if isinstance(state, dict):
            state = "; ".join(f"{k}: {v}" for k, v in state.items()) or "tracking"
        suffix = "" if entry["enabled"] else " (disabled for this patient)"
        lines.append(f"  {entry['rule']} v{entry['version']}{suffix}: {state}")
        if "override" in entry:
            lines.append(f"      override: {orjson.dumps(entry['override']).decode()}")
            lines.append(f"      effective: {orjson.dumps(entry['effective']).decode()}")
        if "next scheduled run" in entry:
            lines.append(f"      next scheduled run: {entry['next scheduled run']}")
    return "\n".join(lines)
