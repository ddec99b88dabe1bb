"""Observations for readings that carry an ``ObservationDetail`` (HL7v2 OBX and the like).

Catalogue-typed readings go through :func:`hub.normalize.observation.build_observation` (codes,
UCUM conversion, plausibility) and are then completed from the detail: the source's own codings
beside the catalogue's (MDC + LOINC dual coding, as the HL7 PHD IG requires), status, comparator,
reference range, interpretation, method, body site, notes, the gateway. Readings whose code is
in no catalogue (lab results, unmapped MDC metrics) are built here from the detail alone, with
the value typed by the source (Quantity, Range, Ratio, SampledData, CodeableConcept, dateTime,
string). A reading without a value carries ``dataAbsentReason`` when the source said why.

Ids stay the reading identity (device, patient, type or code, effective instant; hub.fhir.ids),
so the same reading sent twice — or once as JSON and once as HL7 — is one resource.
``tests/hl7v2_fhir`` validates every shape produced here with fhir.resources.R4B.
"""

from __future__ import annotations

from typing import Any

from hub.contracts import (
    Code,
    Concept,
    DateTimeText,
    Measurement,
    ObservationDetail,
    ObservedValue,
    Quantity,
    Range,
    Ratio,
    ReferenceRange,
    ReportDraft,
    Samples,
)
from hub.errors import DataError
from hub.fhir.ids import observation_id, urn_identifier
from hub.mappings.schema import UCUM, TypeSpec
from hub.normalize import plausibility
from hub.normalize.observation import (
    CATEGORY_DISPLAY,
    CATEGORY_SYSTEM,
    MAPPING_TAG_SYSTEM,
    SOURCE_TAG_SYSTEM,
    Lineage,
    build_observation,
)

DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
GATEWAY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
_SETTLED = frozenset({"final", "amended", "corrected"})


def build_detailed_observation(
    m: Measurement,
    spec: TypeSpec | None,
    *,
    patient_id: str | None,
    device_id: str,
    lineage: Lineage,
    gateway_id: str | None = None,
) -> dict[str, Any]:
    """The R4 Observation for a reading with ``m.detail``; DataError names what and where."""
    detail = m.detail or ObservationDetail()
    if spec is not None and m.values:
        obs = build_observation(m, spec, patient_id=patient_id, device_id=device_id,
                                lineage=lineage)
        _add_codings(obs["code"], detail.codings)
        _component_codings(obs, spec, m, detail)
    else:
        obs = _skeleton(m, spec, detail, patient_id, device_id, lineage)
    held = any(t.get("code") == plausibility.TAG["code"]
               for t in obs["meta"].get("tag", []) if t.get("system") == plausibility.TAG_SYSTEM)
    status = m.status or "final"
    obs["status"] = plausibility.HELD_STATUS if held and status in _SETTLED else status
    if detail.comparator and "valueQuantity" in obs:
        obs["valueQuantity"]["comparator"] = detail.comparator
    if detail.effective_text:
        obs["effectiveDateTime"] = detail.effective_text
    if detail.reference_range:
        obs["referenceRange"] = [_range_json(r) for r in detail.reference_range]
    if detail.interpretation:
        obs["interpretation"] = (obs.get("interpretation", [])
                                 + [_concept(c) for c in detail.interpretation])
    if detail.method is not None:
        obs["method"] = _concept(detail.method)
    if detail.body_site is not None:
        obs["bodySite"] = _concept(detail.body_site)
    if detail.notes:
        obs["note"] = obs.get("note", []) + [{"text": n} for n in detail.notes]
    if not detail.device_is_equipment:
        obs.pop("device", None)
    if gateway_id is not None:
        obs["extension"] = [{"url": GATEWAY_EXTENSION,
                             "valueReference": {"reference": f"Device/{gateway_id}"}}]
    if detail.report is not None:
        _add_result(detail.report, obs)
    return obs


_REPORT_ORDER = ("resourceType", "id", "meta", "identifier", "status", "category", "code",
                 "subject", "effectiveDateTime", "effectivePeriod", "issued", "performer",
                 "resultsInterpreter", "result")
_LINEAGE_TAGS = frozenset({SOURCE_TAG_SYSTEM, MAPPING_TAG_SYSTEM})


def _add_result(draft: ReportDraft, obs: dict[str, Any]) -> None:
    """Make ``obs`` a result of the report; the first result completes and emits it (see
    :class:`hub.contracts.ReportDraft`): lineage from the Observation, its subject."""
    report = draft.resource
    if "result" not in report:
        meta = obs["meta"]
        report["meta"] = {"source": meta["source"],
                          "tag": [t for t in meta.get("tag", [])
                                  if t.get("system") in _LINEAGE_TAGS]}
        if "subject" in obs:
            report["subject"] = dict(obs["subject"])
        report["result"] = []
        draft.resource = report = {k: report[k] for k in _REPORT_ORDER if k in report}
        draft.sink.append(report)
    ref = {"reference": f"Observation/{obs['id']}"}
    if ref not in report["result"]:
        report["result"].append(ref)


def _skeleton(m: Measurement, spec: TypeSpec | None, detail: ObservationDetail,
              patient_id: str | None, device_id: str, lineage: Lineage) -> dict[str, Any]:
    """An Observation without the catalogue's value path: uncatalogued, or no value sent."""
    rid = observation_id(m.device, patient_id, m.type, m.time)
    meta: dict[str, Any] = {"source": f"urn:uuid:{lineage.message_id}",
                            "tag": [{"system": SOURCE_TAG_SYSTEM, "code": lineage.source}]}
    if m.mapping:
        meta["tag"].append({"system": MAPPING_TAG_SYSTEM, "code": m.mapping})
    if spec is not None and spec.profile:
        meta["profile"] = [spec.profile]
    obs: dict[str, Any] = {"resourceType": "Observation", "id": rid, "meta": meta,
                           "identifier": [urn_identifier(rid)], "status": "final"}
    category = spec.category if spec is not None else detail.category
    if category:
        obs["category"] = [{"coding": [{"system": CATEGORY_SYSTEM, "code": category,
                                        "display": CATEGORY_DISPLAY[category]}]}]
    if spec is not None:
        obs["code"] = {"coding": [{"system": c.system, "code": c.code, "display": c.display}
                                  for c in spec.codes]}
        _add_codings(obs["code"], detail.codings)
    else:
        obs["code"] = _concept(Concept(detail.codings, detail.code_text))
    if patient_id is not None:
        obs["subject"] = {"reference": f"Patient/{patient_id}"}
    obs["effectiveDateTime"] = m.time.isoformat()
    obs["device"] = {"reference": f"Device/{device_id}"}
    value = detail.value if spec is None else None
    if value is not None:
        obs.update(_value(value, m.location or m.type))
    elif detail.absent_reason:
        obs["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT,
                                               "code": detail.absent_reason}]}
    return obs


def _add_codings(code: dict[str, Any], extra: tuple[Code, ...]) -> None:
    codings: list[dict[str, Any]] = code.setdefault("coding", [])
    have = {(c.get("system"), c.get("code")) for c in codings}
    for c in extra:
        if (c.system, c.code) not in have:
            codings.append(_coding(c))
            have.add((c.system, c.code))


def _component_codings(obs: dict[str, Any], spec: TypeSpec, m: Measurement,
                       detail: ObservationDetail) -> None:
    if not detail.component_codings or "component" not in obs:
        return
    present = [c.input for c in spec.components if c.input in m.values]
    for name, component in zip(present, obs["component"], strict=False):
        _add_codings(component["code"], detail.component_codings.get(name, ()))


def _coding(c: Code) -> dict[str, Any]:
    out = {"system": c.system, "code": c.code}
    if c.display:
        out["display"] = c.display
    return out


def _concept(value: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.codings:
        out["coding"] = [_coding(c) for c in value.codings]
    if value.text:
        out["text"] = value.text
    return out


def _quantity(q: Quantity, simple: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"value": q.value}
    if q.comparator and not simple:
        out["comparator"] = q.comparator
    if q.unit:
        out.update(unit=q.unit, system=UCUM, code=q.unit)
    elif q.unit_text:
        out["unit"] = q.unit_text
    return out


def _range_json(r: ReferenceRange) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.low is not None:
        out["low"] = _quantity(r.low, simple=True)
    if r.high is not None:
        out["high"] = _quantity(r.high, simple=True)
    out["text"] = r.text
    return out


def _value(value: ObservedValue, where: str) -> dict[str, Any]:
    if isinstance(value, Quantity):
        return {"valueQuantity": _quantity(value)}
    if isinstance(value, Range):
        rng: dict[str, Any] = {}
        if value.low is not None:
            rng["low"] = _quantity(value.low, simple=True)
        if value.high is not None:
            rng["high"] = _quantity(value.high, simple=True)
        return {"valueRange": rng}
    if isinstance(value, Ratio):
        return {"valueRatio": {"numerator": _quantity(value.numerator, simple=True),
                               "denominator": _quantity(value.denominator, simple=True)}}
    if isinstance(value, Samples):
        origin: dict[str, Any] = {"value": 0}
        if value.unit:
            origin.update(unit=value.unit, system=UCUM, code=value.unit)
        # R4 requires a period; 0 stands for "not sent" (HL7 NA/MA carries no sample rate).
        return {"valueSampledData": {
            "origin": origin, "period": value.period_ms if value.period_ms is not None else 0,
            "dimensions": value.dimensions, "data": " ".join(str(v) for v in value.data)}}
    if isinstance(value, Concept):
        return {"valueCodeableConcept": _concept(value)}
    if isinstance(value, DateTimeText):
        return {"valueDateTime": value.text}
    if isinstance(value, str):
        return {"valueString": value}
    raise DataError("value has no FHIR form", location=where)
