"""Stage 2 of the mapping language: a Measurement + its catalogue entry → an R4 Observation.

Hot path. Observations are built as plain dicts from catalogue templates rather than validated
through fhir.resources per reading: measured here, ``Observation.model_validate`` costs ~90 µs per
reading (≈11k/s on one core), which alone would miss the ≥20k readings/s ingest target. Instead
``tests/test_catalogue_fhir.py`` validates every catalogue type's output with fhir.resources.R4B,
so the templates are proven valid once rather than re-checked per reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import inf, isfinite
from typing import Any

from hub.contracts import Measurement
from hub.errors import DataError
from hub.fhir.ids import observation_id, urn_identifier, utc_isoformat
from hub.mappings.schema import UCUM, TypeSpec, UnitSpec
from hub.normalize import plausibility, units

CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
CATEGORY_DISPLAY = {
    "vital-signs": "Vital Signs",
    "activity": "Activity",
    "laboratory": "Laboratory",
    "survey": "Survey",
    "exam": "Exam",
}
MAPPING_TAG_SYSTEM = "urn:iomt-fhir-hub:mapping"
SOURCE_TAG_SYSTEM = "urn:iomt-fhir-hub:source"


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a resource came from: inbound message, connector (source) and mapping."""

    message_id: str
    source: str


def _codeable(spec_codes: Any) -> dict[str, Any]:
    return {"coding": [{"system": c.system, "code": c.code, "display": c.display}
                       for c in spec_codes]}


@dataclass(frozen=True, slots=True)
class _Unit:
    """The fields of a ``UnitSpec`` each reading reads, as plain attributes."""

    spec: UnitSpec  # for conversions and refusals (rare)
    code: str
    display: str
    aliases: tuple[str, ...]

    @classmethod
    def of(cls, spec: UnitSpec) -> _Unit:
        return cls(spec, spec.code, spec.display, tuple(spec.aliases))


@dataclass(frozen=True, slots=True)
class _Part:
    """A panel component's fields each reading reads, and its codings as JSON."""

    input: str
    required: bool
    unit: _Unit
    codings: tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True)
class _Template:
    """A catalogue type as each reading reads it, made once: its codings as JSON (every
    Observation gets its own copies, ``_copied``: callers may edit what they get, HL7v2 adds
    codings to ``code``) and the fields of its ``TypeSpec`` as plain attributes. A pydantic
    model's attributes go through its ``__getattr__`` hook, which the interpreter does not
    specialise: ~15 of them a reading cost build_observation ~5k of its ~80k instructions
    (valgrind, 10,000 canonical readings)."""

    spec: TypeSpec  # held: the cache is keyed by its id()
    code: tuple[dict[str, str], ...]
    category: tuple[dict[str, str], ...]
    components: tuple[_Part, ...]
    profile: str | None
    value: str
    input: str
    unit: _Unit | None
    reviewed: bool  # plausibility.review has something to check
    # A single quantity's plausible range as (low, high, low exclusive, high exclusive), None
    # bounds as -inf/+inf: a reading inside it is what ``plausibility.review`` leaves untouched,
    # so only one outside is handed to review (which marks it). None: review every reading.
    bounds: tuple[float, float, bool, bool] | None


_templates: dict[int, _Template] = {}


def _template(spec: TypeSpec) -> _Template:
    found = _templates.get(id(spec))
    if found is not None and found.spec is spec:
        return found
    if len(_templates) > 10_000:  # catalogues reloaded many times over: start afresh
        _templates.clear()
    category = (() if not spec.category else
                ({"system": CATEGORY_SYSTEM, "code": spec.category,
                  "display": CATEGORY_DISPLAY[spec.category]},))
    parts = tuple(_Part(c.input, c.required, _Unit.of(c.unit), tuple(_codeable(c.codes)["coding"]))
                  for c in spec.components)
    rng = spec.plausible
    bounds = (None if rng is None or spec.components or spec.value != "quantity"
              or spec.unit is None else
              (-inf if rng.min is None else rng.min, inf if rng.max is None else rng.max,
               rng.min_exclusive, rng.max_exclusive))
    made = _Template(spec, tuple(_codeable(spec.codes)["coding"]), category, parts,
                     spec.profile, spec.value, spec.input,
                     None if spec.unit is None else _Unit.of(spec.unit),
                     spec.plausible is not None or bool(spec.components), bounds)
    _templates[id(spec)] = made
    return made


def _copied(codings: tuple[dict[str, str], ...]) -> dict[str, Any]:
    # A C-level copy of each coding: ~0.4 us where building it from the model's attributes
    # took ~0.9 us (timeit), one to three codings per reading.
    return {"coding": [c.copy() for c in codings]}


# A tuple, not ``int | float``: that builds a union object on every call (as in
# hub.rules.readings), once or twice per reading here.
_NUMBER = (int, float)


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        if isinstance(value, str):
            try:
                number = float(value) if any(ch in value for ch in ".eE") else int(value)
            except ValueError:
                pass
            else:
                if isfinite(number):
                    return number
        raise DataError("value is not a number", location=where)
    if value.__class__ is float and not isfinite(value):  # NaN/inf: no FHIR decimal holds them
        raise DataError("value is not a finite number", location=where)
    return value


def _quantity(value: Any, unit: _Unit, given_unit: str | None, where: str) -> dict[str, Any]:
    if given_unit is not None and (given_unit == unit.code or given_unit in unit.aliases):
        number = _number(value, where)  # the canonical unit or an alias: untouched
    else:
        # Another unit: converted if the catalogue accepts it (a compiled multiply-add, see
        # hub.normalize.units), else refused.
        conversion = (None if given_unit is None
                      else units.converter(unit.spec, given_unit, f"{where}.unit"))
        if conversion is None:
            raise DataError(_unit_refusal(unit.spec, given_unit), location=f"{where}.unit")
        number = conversion.apply(_number(value, where), value)
    return {"value": number, "unit": unit.display, "system": UCUM, "code": unit.code}


def _unit_refusal(unit: UnitSpec, given: str | None) -> str:
    accepted = "".join(f", or {s.code} (converted)" for s in unit.convert_from)
    what = "missing" if given is None else f"'{given[:40]}'"
    return f"unit not accepted: {what} (expected {unit.code}{accepted})"


def _component(part: _Part, m: Measurement, where: str) -> dict[str, Any] | None:
    if part.input not in m.values:
        if part.required:
            raise DataError(f"component '{part.input}' missing", location=where)
        return None
    return {"code": _copied(part.codings),
            "valueQuantity": _quantity(m.values[part.input], part.unit, m.unit,
                                       f"{where}.{part.input}")}


def build_observation(
    m: Measurement,
    spec: TypeSpec,
    *,
    patient_id: str | None,
    device_id: str,
    lineage: Lineage,
) -> dict[str, Any]:
    """The R4 Observation for one measurement; DataError names what is wrong and where."""
    where = m.location or m.type
    effective = utc_isoformat(m.time)
    rid = observation_id(m.device, patient_id, m.type, m.time, effective)
    meta: dict[str, Any] = {
        "source": f"urn:uuid:{lineage.message_id}",
        "tag": [{"system": SOURCE_TAG_SYSTEM, "code": lineage.source}],
    }
    if m.mapping:
        meta["tag"].append({"system": MAPPING_TAG_SYSTEM, "code": m.mapping})
    template = _template(spec)
    if template.profile:
        meta["profile"] = [template.profile]
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "meta": meta,
        "identifier": [urn_identifier(rid)],
        "status": "final",
    }
    if template.category:
        obs["category"] = [_copied(template.category)]
    obs["code"] = _copied(template.code)
    if patient_id is not None:
        obs["subject"] = {"reference": f"Patient/{patient_id}"}
    obs["effectiveDateTime"] = effective
    obs["device"] = {"reference": f"Device/{device_id}"}
    if template.value != "none":
        if template.input not in m.values:
            raise DataError("value missing", location=where)
        if template.value == "quantity" and template.unit is not None:  # most readings
            obs["valueQuantity"] = _quantity(m.values[template.input], template.unit, m.unit,
                                             where)
        else:
            obs.update(_value(spec, m, where))
    if m.comparator is not None:
        if "valueQuantity" not in obs:
            raise DataError(f"a comparator applies to a quantity; type '{m.type}' has none",
                            location=where)
        obs["valueQuantity"]["comparator"] = m.comparator
    if template.components:
        comps = [c for c in (_component(part, m, where) for part in template.components)
                 if c is not None]
        obs["component"] = comps
    bounds = template.bounds
    if bounds is not None:
        # ``plausibility.outside`` inline, on the value review would read: the readings inside
        # their range (nearly all) skip review's calls and model attribute reads. build
        # 71.0k -> 67.0k instructions a reading (bench.icount's mix, 3 in 4 readings single
        # quantities; perf, counting build_observation alone).
        value = float(obs["valueQuantity"]["value"])
        low, high, low_open, high_open = bounds
        if ((value <= low if low_open else value < low)
                or (value >= high if high_open else value > high) or value != value):
            plausibility.review(obs, spec)  # out of range: kept, marked, held for review
    elif template.reviewed:
        plausibility.review(obs, spec)  # out of range: kept, marked, held for review
    return obs


def _value(spec: TypeSpec, m: Measurement, where: str) -> dict[str, Any]:
    raw = m.values[spec.input]
    if spec.value == "quantity":
        if spec.unit is None:
            raise DataError(f"type '{m.type}' has no unit in the catalogue", location=where)
        return {"valueQuantity": _quantity(raw, _Unit.of(spec.unit), m.unit, where)}
    if spec.value == "integer":
        number = _number(raw, where)
        if not isinstance(number, int):
            raise DataError("value is not an integer", location=where)
        return {"valueInteger": number}
    if spec.value == "string":
        return {"valueString": str(raw)}
    # codeable-concept: the source gives "system|code" or a bare text
    text = str(raw)
    if "|" in text:
        system, code = text.split("|", 1)
        return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}
    return {"valueCodeableConcept": {"text": text}}
