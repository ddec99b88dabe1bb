"""EHR write profiles: what each EHR accepts, applied to a resource before it is sent.

A profile turns one stored resource into what the EHR takes: the same resource, a changed copy,
several resources, or nothing (:class:`Skip`, with a reason that goes to the delivery lineage).
The stored resource is never changed. ``hub sync --dry-run`` shows the result. Reference and
sources: ``docs/sync.md``.

* ``oracle-health`` (Millennium R4, fhir.cerner.com): Observation components only on the blood
  pressure (85354-9) and pulse oximetry (59408-5 / 2708-6) profiles; any other panel is sent as
  one Observation per component. No Flag resource: an active Flag is sent as an alert
  Communication (Communication create is supported). Modifier elements fail a request, so
  ``modifierExtension`` and ``implicitRules`` are dropped.
* ``epic-vitals`` (Observation.Create (Vitals)): only ``status = final`` is accepted; each
  vital is filed to a flowsheet row, so the LOINC code gets the configured flowsheet coding and an
  unmapped code is skipped when a flowsheet system is configured; the BP panel goes as
  ``valueString`` "118/77". No Flag write: Flags are skipped.
"""

from __future__ import annotations

import copy
from typing import Any

from hub.fhir.ids import stable_id, urn_identifier
from hub.sync.config import EhrProfile

LOINC = "http://loinc.org"
BP_PANEL = "85354-9"
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
PULSE_OX = {"59408-5", "2708-6"}
COMM_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"


class Skip(Exception):
    """The destination does not take this resource; ``reason`` is recorded, nothing is sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def loinc_codes(resource: dict[str, Any]) -> set[str]:
    return {c.get("code") for c in (resource.get("code") or {}).get("coding") or []
            if c.get("system") == LOINC and c.get("code")}


def apply(profile: EhrProfile, resource: dict[str, Any]) -> list[dict[str, Any]]:
    """What to send for ``resource`` under ``profile``; raises :class:`Skip` to send nothing."""
    if profile.name == "oracle-health":
        return oracle_health(resource)
    if profile.name == "epic-vitals":
        return [epic_vitals(profile, resource)]
    return [resource]


def _without_modifiers(resource: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k not in ("modifierExtension", "implicitRules")}
    for comp in out.get("component") or []:
        comp.pop("modifierExtension", None)
    return out


def oracle_health(resource: dict[str, Any]) -> list[dict[str, Any]]:
    rtype = resource.get("resourceType")
    if rtype == "Flag":
        return [flag_to_communication(resource)]
    resource = _without_modifiers(resource)
    if rtype != "Observation" or not resource.get("component"):
        return [resource]
    if loinc_codes(resource) & ({BP_PANEL} | PULSE_OX):
        return [resource]
    return split_components(resource)


def split_components(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """One Observation per component, with deterministic ids derived from the panel's."""
    base = {k: v for k, v in resource.items()
            if k not in ("component", "id", "identifier", "code", "hasMember")}
    parts = []
    for comp in resource.get("component") or []:
        codes = "|".join(f"{c.get('system')}#{c.get('code')}"
                         for c in (comp.get("code") or {}).get("coding") or [])
        rid = stable_id("component", str(resource.get("id")), codes)
        part = copy.deepcopy(base)
        part.update({k: v for k, v in comp.items() if k != "code"})
        part.update(id=rid, identifier=[urn_identifier(rid)], code=comp.get("code"))
        part["derivedFrom"] = [{"reference": f"Observation/{resource.get('id')}"}]
        parts.append(part)
    if not parts:
        raise Skip("panel without components")
    return parts


def flag_to_communication(flag: dict[str, Any]) -> dict[str, Any]:
    """An active Flag as an alert Communication about the same patient."""
    if flag.get("status") != "active":
        raise Skip("Oracle Health has no Flag; only active Flags are sent (as Communication)")
    rid = stable_id("Communication", "from-Flag", str(flag.get("id")))
    code = flag.get("code") or {}
    text = code.get("text") or next(
        (c.get("display") for c in code.get("coding") or [] if c.get("display")), "alert")
    comm: dict[str, Any] = {
        "resourceType": "Communication", "id": rid, "identifier": [urn_identifier(rid)],
        "status": "completed",
        "category": [{"coding": [{"system": COMM_CATEGORY, "code": "alert"}]}],
        "priority": "urgent" if _flag_priority(flag) else "routine",
        "payload": [{"contentString": str(text)}],
    }
    if flag.get("subject"):
        comm["subject"] = flag["subject"]
    if (flag.get("period") or {}).get("start"):
        comm["sent"] = flag["period"]["start"]
    if flag.get("author"):
        comm["sender"] = flag["author"]
    return comm


def _flag_priority(flag: dict[str, Any]) -> bool:
    for ext in flag.get("extension") or []:
        if str(ext.get("url", "")).endswith("flag-priority"):
            codes = {c.get("code") for c in (ext.get("valueCodeableConcept") or {})
                     .get("coding") or []}
            return bool(codes & {"PH", "PM"})
    return False


def epic_vitals(profile: EhrProfile, resource: dict[str, Any]) -> dict[str, Any]:
    rtype = resource.get("resourceType")
    if rtype == "Flag":
        raise Skip("Epic: no Flag write")
    if rtype != "Observation":
        return resource
    if resource.get("status") != "final":
        raise Skip(f"Epic vitals: status '{resource.get('status')}' not accepted (final only)")
    out = copy.deepcopy(resource)
    codes = loinc_codes(out)
    if profile.flowsheet_system:
        row = next((profile.flowsheets[c] for c in sorted(codes) if c in profile.flowsheets),
                   None)
        if row is None:
            raise Skip("Epic vitals: no flowsheet row mapped for this code")
        out["code"]["coding"].append({"system": profile.flowsheet_system, "code": row})
    if profile.bp_as_string and BP_PANEL in codes:
        values = {}
        for comp in out.get("component") or []:
            for c in (comp.get("code") or {}).get("coding") or []:
                if c.get("code") in (SYSTOLIC, DIASTOLIC):
                    values[c["code"]] = (comp.get("valueQuantity") or {}).get("value")
        if values.get(SYSTOLIC) is None or values.get(DIASTOLIC) is None:
            raise Skip("Epic vitals: BP panel without systolic and diastolic values")
        out.pop("component", None)
        out["valueString"] = f"{_num(values[SYSTOLIC])}/{_num(values[DIASTOLIC])}"
    return out


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
