"""FHIR R4 resources the rules write: Flag, Communication, derived Observations, the hub Device.

Representation choices (docs/rules.md § FHIR):

- **Evidence on a Flag**: R4 Flag has no evidence element, so each triggering Observation is a
  ``http://hl7.org/fhir/StructureDefinition/flag-detail`` extension (valueReference; the core
  extension defined for Flag: "Points to the Observation ... that provides additional supporting
  information about this flag"). Communications carry the same references in ``about``, and
  derived Observations in ``derivedFrom``.
- **Priority on a Flag**: R4 Flag has no priority; the core extension
  ``http://hl7.org/fhir/StructureDefinition/flag-priority`` with codes PN/PL/PM/PH from
  ``http://hl7.org/fhir/flag-priority-code``. Escalation updates this extension on the *same*
  Flag (a new version), never adds a Flag.
- **Which rule, which version, which values, which baseline**: the complex extension
  ``urn:iomt-fhir-hub:rule`` (sub-extensions ``id``, ``version``, ``summary``, repeating
  ``value`` and ``baseline`` each with ``measure`` + ``quantity``/``text``, and ``method``), and
  a ``meta.tag`` ``urn:iomt-fhir-hub:rule|<rule id>`` so outputs are searchable by rule.
- **Author / sender**: the hub as a Device (``hub_device``), a stable id.

Ids are ``hub.fhir.ids.stable_id`` over (type, patient, rule, episode/event key), so replaying
the same readings rewrites the same resources and never duplicates an output.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub.fhir.ids import stable_id, urn_identifier

UCUM = "http://unitsofmeasure.org"
RULE_EXT = "urn:iomt-fhir-hub:rule"
RULE_TAG_SYSTEM = "urn:iomt-fhir-hub:rule"
RULE_CODE_SYSTEM = "urn:iomt-fhir-hub:rules"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
FLAG_PRIORITY = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITY_SYSTEM = "http://hl7.org/fhir/flag-priority-code"
FLAG_PRIORITY_CODES = {"none": ("PN", "No alarm"), "low": ("PL", "Low priority"),
                       "medium": ("PM", "Medium priority"), "high": ("PH", "High priority")}
PRIORITY_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3}
FLAG_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-category"
FLAG_CATEGORY_DISPLAY = {"clinical": "Clinical", "drug": "Drug", "behavioral": "Behavioral",
                         "admin": "Administrative", "lab": "Lab", "safety": "Safety"}
COMM_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/communication-category"
COMM_CATEGORY_DISPLAY = {"alert": "Alert", "notification": "Notification",
                         "reminder": "Reminder", "instruction": "Instruction"}
HUB_DEVICE_IDENTIFIER = {"system": "urn:iomt-fhir-hub:device", "value": "rules-engine"}
HUB_DEVICE_ID = stable_id("Device", "urn:iomt-fhir-hub:device|rules-engine")
HUB_DEVICE_REF = {"reference": f"Device/{HUB_DEVICE_ID}", "display": "IoMT FHIR hub rules engine"}

Finding = dict[str, Any]
"""What a rule saw, JSON-able (kept in rule state to rebuild the Flag later)::

    {"summary": "SpO2 88 % on 2 consecutive readings (limit: below 90)",
     "values": [["SpO2", 88.0, "%"]], "evidence": ["Observation/..."],
     "baseline": [["SBP median", 128.0, "mm[Hg]"]], "method": "median of 24 samples ..."}
"""


def iso(t: float) -> str:
    """Epoch seconds → an R4 instant (UTC, second precision unless fractional)."""
    moment = datetime.fromtimestamp(t, UTC)
    if moment.microsecond:
        return moment.isoformat().replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity(value: float, unit: str | None) -> dict[str, Any]:
    number: float | int = round(value, 4)
    if float(number).is_integer() and abs(number) < 1e15:
        number = int(number)
    if unit is None:
        return {"value": number}
    return {"value": number, "unit": unit, "system": UCUM, "code": unit}


def hub_device() -> dict[str, Any]:
    """The hub's rules engine as a Device: author of Flags, sender of Communications."""
    return {"resourceType": "Device", "id": HUB_DEVICE_ID,
            "identifier": [dict(HUB_DEVICE_IDENTIFIER)], "status": "active",
            "deviceName": [{"name": "IoMT FHIR hub rules engine", "type": "user-friendly-name"}],
            "type": {"text": "Clinical decision support software (rules engine)"}}


def _measured(label: str, value: Any, unit: str | None) -> dict[str, Any]:
    inner: list[dict[str, Any]] = [{"url": "measure", "valueString": label}]
    if isinstance(value, (int, float)):
        inner.append({"url": "quantity", "valueQuantity": quantity(float(value), unit)})
    else:
        inner.append({"url": "text", "valueString": str(value)})
    return {"extension": inner}


def rule_extension(rule_id: str, version: int, finding: Finding | None) -> dict[str, Any]:
    """The ``urn:iomt-fhir-hub:rule`` extension: rule id and version, values, baseline."""
    parts: list[dict[str, Any]] = [{"url": "id", "valueString": rule_id},
                                   {"url": "version", "valueString": str(version)}]
    if finding:
        parts.append({"url": "summary", "valueString": finding["summary"]})
        for label, value, unit in finding.get("values", ()):
            parts.append({"url": "value", **_measured(label, value, unit)})
        for label, value, unit in finding.get("baseline", ()):
            parts.append({"url": "baseline", **_measured(label, value, unit)})
        if finding.get("method"):
            parts.append({"url": "method", "valueString": finding["method"]})
    return {"url": RULE_EXT, "extension": parts}


def rule_meta(rule_id: str, version: int) -> dict[str, Any]:
    return {"tag": [{"system": RULE_TAG_SYSTEM, "code": rule_id,
                     "display": f"rule {rule_id} version {version}"}]}


def flag(*, fid: str, patient: str, rule_id: str, version: int, title: str, text: str,
         category: str, codes: list[dict[str, Any]], priority: str, start: float,
         end: float | None, finding: Finding) -> dict[str, Any]:
    """An R4 Flag for one episode of one rule (active until ``end``)."""
    code, display = FLAG_PRIORITY_CODES[priority]
    extensions: list[dict[str, Any]] = [
        {"url": FLAG_PRIORITY, "valueCodeableConcept": {"coding": [
            {"system": FLAG_PRIORITY_SYSTEM, "code": code, "display": display}]}}]
    extensions += [{"url": FLAG_DETAIL, "valueReference": {"reference": ref}}
                   for ref in finding.get("evidence", ())]
    extensions.append(rule_extension(rule_id, version, finding))
    period: dict[str, str] = {"start": iso(start)}
    if end is not None:
        period["end"] = iso(end)
    return {
        "resourceType": "Flag", "id": fid, "meta": rule_meta(rule_id, version),
        "extension": extensions, "identifier": [urn_identifier(fid)],
        "status": "active" if end is None else "inactive",
        "category": [{"coding": [{"system": FLAG_CATEGORY_SYSTEM, "code": category,
                                  "display": FLAG_CATEGORY_DISPLAY[category]}]}],
        "code": {"coding": [{"system": RULE_CODE_SYSTEM, "code": rule_id, "display": title},
                            *codes], "text": text},
        "subject": {"reference": f"Patient/{patient}"},
        "period": period,
        "author": dict(HUB_DEVICE_REF),
    }


def communication(*, cid: str, patient: str, rule_id: str, version: int, category: str,
                  priority: str, recipient: dict[str, Any], sent: float, text: str,
                  about: list[str], finding: Finding | None) -> dict[str, Any]:
    """An R4 Communication the hub sends (status completed: handing it to the outbox is the
    send; delivery to the recipient's system is tracked there)."""
    res: dict[str, Any] = {
        "resourceType": "Communication", "id": cid, "meta": rule_meta(rule_id, version),
        "extension": [rule_extension(rule_id, version, finding)],
        "identifier": [urn_identifier(cid)], "status": "completed",
        "category": [{"coding": [{"system": COMM_CATEGORY_SYSTEM, "code": category,
                                  "display": COMM_CATEGORY_DISPLAY[category]}]}],
        "priority": priority,
        "subject": {"reference": f"Patient/{patient}"},
        "sent": iso(sent),
        "recipient": [recipient],
        "sender": dict(HUB_DEVICE_REF),
        "payload": [{"contentString": text}],
    }
    if about:
        res["about"] = [{"reference": ref} for ref in about]
    return res


def derived_observation(*, oid: str, patient: str, rule_id: str, version: int,
                        code: dict[str, Any], status: str, finding: Finding | None,
                        **fields: Any) -> dict[str, Any]:
    """An Observation the rules compute (NEWS2, CGM summary, days with data)."""
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "meta": rule_meta(rule_id, version),
        "extension": [rule_extension(rule_id, version, finding)],
        "identifier": [urn_identifier(oid)], "status": status,
    }
    category = fields.pop("category", None)
    if category is not None:
        res["category"] = category
    res["code"] = code
    res["subject"] = {"reference": f"Patient/{patient}"}
    res.update(fields)
    res["device"] = dict(HUB_DEVICE_REF)
    return res
