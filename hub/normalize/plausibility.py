"""Plausibility: a reading outside its type's plausible range is kept, marked and held for review.

Behaviour (one, documented in docs/terminology.md § Plausibility). An implausible reading is
never dropped and never stored as a valid result. Its Observation is stored with:

- ``status: preliminary``: the result is not final, so rules and sync profiles that take
  ``final``/``amended`` results ignore it until someone reviews it. ``entered-in-error`` would be
  wrong: nobody has shown the value is wrong. It may be a true extreme.
- ``interpretation`` coded from http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation:
  ``HX`` "above high threshold" / ``LX`` "below low threshold" on the value or on the offending
  component, and ``EX`` "outside threshold" on the Observation when the components break their
  order (a diastolic at or above the systolic). These codes mean "outside a protocol's
  threshold", here the hub's plausibility protocol. ``H``/``L`` (reference range) would read as
  a clinical finding, and ``HM`` "Hold for Medical Review" is deprecated in THO.
- a ``note`` that says why, in words, without repeating the value (the value is in the
  Observation);
- the ``meta.tag`` ``urn:iomt-fhir-hub:plausibility|implausible``, searchable
  (``_tag=urn:iomt-fhir-hub:plausibility|implausible``) for a review work list.

``held_reason`` gives the pipeline the same value-free reason for the message's lineage.

Cost: one ``is None`` test per reading for a type without ranges; with ranges, a few float
comparisons (< 1 µs); the marking work only happens for implausible readings.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hub.mappings.schema import Plausible, TypeSpec

INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ABOVE = {"system": INTERPRETATION_SYSTEM, "code": "HX", "display": "above high threshold"}
BELOW = {"system": INTERPRETATION_SYSTEM, "code": "LX", "display": "below low threshold"}
OUTSIDE = {"system": INTERPRETATION_SYSTEM, "code": "EX", "display": "outside threshold"}
TAG_SYSTEM = "urn:iomt-fhir-hub:plausibility"
TAG = {"system": TAG_SYSTEM, "code": "implausible",
       "display": "Implausible reading held for review"}
HELD_STATUS = "preliminary"
NOTE_PREFIX = "Implausible reading held for review: "


def outside(rng: Plausible, value: float) -> dict[str, str] | None:
    """``ABOVE``/``BELOW`` when ``value`` is outside ``rng``, else None (NaN counts as outside)."""
    low, high = rng.min, rng.max
    if low is not None and (value <= low if rng.min_exclusive else value < low):
        return BELOW
    if high is not None and (value >= high if rng.max_exclusive else value > high):
        return ABOVE
    if value != value:  # NaN fails every comparison above; it is never plausible
        return ABOVE
    return None


def _bound_text(rng: Plausible, code: dict[str, str], unit: str) -> str:
    if code is BELOW:
        relation = "at or below" if rng.min_exclusive else "below"
        return f"{relation} the plausible minimum {rng.min:g} {unit}"
    relation = "at or above" if rng.max_exclusive else "above"
    return f"{relation} the plausible maximum {rng.max:g} {unit}"


def review(obs: dict[str, Any], spec: TypeSpec) -> None:
    """Check a freshly built Observation against its type's ranges; hold it if implausible.

    Contract: ``obs`` is what build_observation made from ``spec`` (values already in canonical
    units). Mutates ``obs`` only when something is implausible; returns nothing.
    """
    reasons: list[str] = []
    rng = spec.plausible
    if rng is not None:
        value = _value_of(obs)
        if value is not None:
            code = outside(rng, value)
            if code is not None:
                unit = spec.unit.code if spec.unit is not None else ""
                reason = f"{spec.codes[0].display} {_bound_text(rng, code, unit)}"
                obs["interpretation"] = [{"coding": [code], "text": reason}]
                reasons.append(reason)
    entries = obs.get("component")
    if entries:
        values = _review_components(entries, spec, reasons)
        if spec.ordered:
            present = [name for name in spec.ordered if name in values]
            for lower, higher in pairwise(present):
                if not values[lower] < values[higher]:
                    reason = f"{lower} is not below {higher} (swapped or mis-mapped fields?)"
                    obs.setdefault("interpretation", []).append({"coding": [OUTSIDE],
                                                                 "text": reason})
                    reasons.append(reason)
    if reasons:
        hold(obs, reasons)


def hold(obs: dict[str, Any], reasons: list[str]) -> None:
    """Mark ``obs`` as held for review: status, tag and a note with the (value-free) reasons."""
    obs["status"] = HELD_STATUS
    obs.setdefault("meta", {}).setdefault("tag", []).append(dict(TAG))
    obs["note"] = [{"text": NOTE_PREFIX + "; ".join(reasons)}]


def held_reason(obs: dict[str, Any]) -> str | None:
    """The value-free reason an Observation was held, for the message lineage; else None.

    Cheap on the common path (one dict lookup and a string compare).
    """
    if obs.get("status") != HELD_STATUS:
        return None
    if not any(t.get("system") == TAG_SYSTEM for t in obs.get("meta", {}).get("tag", ())):
        return None
    notes = obs.get("note") or [{}]
    text = str(notes[0].get("text", ""))
    return "held for review: " + text.removeprefix(NOTE_PREFIX)


def _value_of(obs: dict[str, Any]) -> float | None:
    quantity = obs.get("valueQuantity")
    if quantity is not None:
        return float(quantity["value"])
    if "valueInteger" in obs:
        return float(obs["valueInteger"])
    return None


def _review_components(entries: list[dict[str, Any]], spec: TypeSpec,
                       reasons: list[str]) -> dict[str, float]:
    """Check each component present; return input name → value for the order check.

    build_observation emits components in catalogue order, skipping absent optional ones, so
    one forward walk pairs each entry with its ComponentSpec (no per-reading lookup tables).
    """
    values: dict[str, float] = {}
    index, count = 0, len(entries)
    for comp in spec.components:
        if index == count:
            break
        entry = entries[index]
        if entry["code"]["coding"][0]["code"] != comp.codes[0].code:
            continue  # this optional component is absent
        index += 1
        quantity = entry.get("valueQuantity")
        if quantity is None:
            continue
        value = quantity["value"]
        values[comp.input] = value
        rng = comp.plausible
        if rng is not None:
            code = outside(rng, value)
            if code is not None:
                reason = f"{comp.codes[0].display} {_bound_text(rng, code, comp.unit.code)}"
                entry["interpretation"] = [{"coding": [code], "text": reason}]
                reasons.append(reason)
    return values
