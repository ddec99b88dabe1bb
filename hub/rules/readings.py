"""Stored Observations → per-patient samples the rules read (the ingest hot path).

One ``Sample`` per Observation: its patient, effective instant (epoch seconds), reference, and the
values of every measure it carries (as Observation.code or as a component, in the measure's
canonical unit). Work is a few dict lookups per coding; nothing is read from the database.

A sample is *usable* only when the Observation's status is final, amended or corrected: readings
that plausibility held for review (status ``preliminary``) or that were entered in error never
move a rule, a baseline or a counter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from operator import attrgetter
from typing import Any, NamedTuple

from hub.rules.model import Measure
from hub.rules.program import Program

USABLE_STATUS = frozenset({"final", "amended", "corrected"})
Value = float | str
# A tuple, not ``int | float``: that expression builds a new (collected) union object on every
# call, once per reading here (py-spy on bench/rules.py: the costliest line of the stage).
_NUMBER = (int, float)
_TIME = attrgetter("t")  # the sort key in C (a lambda was a Python call per sample)


class Sample(NamedTuple):
    """The measures one Observation carries, for one patient at one instant.

    A tuple, made in ``sample_of`` by ``tuple.__new__`` (C): the slotted dataclass it was cost
    a Python ``__init__`` per reading (reading the samples, cachegrind: 27.7k -> 26.9k
    instructions a reading); fields read as fast (C descriptors), and it pickles as a tuple."""

    patient: str
    t: float
    ref: str
    values: dict[str, Value]
    usable: bool


_new_sample = tuple.__new__


def epoch(text: str) -> float | None:
    """An ISO 8601 instant → epoch seconds (a time without offset is taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _value(element: dict[str, Any], measure: Measure) -> Value | None:
    quantity = element.get("valueQuantity")
    if quantity is not None:
        number = quantity.get("value")
        if not isinstance(number, _NUMBER):
            return None
        unit = quantity.get("code")
        if measure.unit is None or unit == measure.unit:
            return float(number)
        factor = measure.convert.get(unit or "")
        return None if factor is None else float(number) * factor
    if measure.unit is not None:
        if "valueInteger" in element:
            return float(element["valueInteger"])
        return None
    concept = element.get("valueCodeableConcept")
    if concept is not None:
        for coding in concept.get("coding") or ():
            return f"{coding.get('system', '')}|{coding.get('code', '')}"
        return str(concept.get("text", ""))
    if "valueBoolean" in element:
        return 1.0 if element["valueBoolean"] else 0.0
    if "valueString" in element:
        return str(element["valueString"])
    if "valueInteger" in element:
        return float(element["valueInteger"])
    return 1.0  # an event without a value (e.g. "dose taken"): its presence is the value


def _collect(concept: Any, element: dict[str, Any],
             by_code: dict[str, list[tuple[str, str, Measure]]], values: dict[str, Value]) -> None:
    if not isinstance(concept, dict):
        return
    for coding in concept.get("coding") or ():
        hits = by_code.get(coding.get("code"))
        if hits is None:
            continue
        system = coding.get("system")
        for measure_system, name, measure in hits:
            if measure_system != system:
                continue
            if name not in values:
                value = _value(element, measure)
                if value is not None:
                    values[name] = value


def sample_of(obs: dict[str, Any], program: Program) -> Sample | None:
    """The sample an Observation gives, or None (no patient, no time, no measure of interest)."""
    subject = obs.get("subject")
    if not isinstance(subject, dict):
        return None
    ref = subject.get("reference")
    if not isinstance(ref, str) or not ref.startswith("Patient/"):
        return None
    values: dict[str, Value] = {}
    by_code = program.by_bare_code
    _collect(obs.get("code"), obs, by_code, values)
    for component in obs.get("component") or ():
        _collect(component.get("code"), component, by_code, values)
    if not values:
        return None
    when = obs.get("effectiveDateTime") or obs.get("effectiveInstant") \
        or (obs.get("effectivePeriod") or {}).get("start")
    t = epoch(when) if isinstance(when, str) else None
    if t is None:
        return None
    return _new_sample(Sample, (ref[8:], t, f"Observation/{obs.get('id')}", values,
                                obs.get("status") in USABLE_STATUS))


class SamplesByPatient(dict[str, list[Sample]]):
    """Samples grouped per patient (a dict), pickled as plain tuples.

    These cross processes once per prepared message (hub.prepare_pool). Pickled sample by
    sample, the pickler called ``Sample.__reduce__`` (Python) for each; one ``__reduce__`` for
    the whole dict hands it tuples it writes in C, the group's patient string once (measured,
    the samples of 2,000 canonical readings, per reading: dump 8.0 -> 0.4 us). Unpickled,
    the Samples are made again from those tuples."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _samples_of, ([(patient, [(patient, s.t, s.ref, s.values, s.usable)
                                         for s in samples])
                              for patient, samples in self.items()],)


def _samples_of(groups: list[tuple[str, list[tuple[str, float, str, dict[str, Value], bool]]]]
                ) -> SamplesByPatient:
    make = partial(_new_sample, Sample)
    return SamplesByPatient((patient, list(map(make, samples))) for patient, samples in groups)


def samples_by_patient(observations: list[dict[str, Any]], program: Program
                       ) -> dict[str, list[Sample]]:
    """Samples grouped per patient, each list in effective-time order."""
    grouped: dict[str, list[Sample]] = SamplesByPatient()
    for obs in observations:
        sample = sample_of(obs, program)
        if sample is not None:
            group = grouped.get(sample.patient)  # (setdefault built a list per reading)
            if group is None:
                grouped[sample.patient] = [sample]
            else:
                group.append(sample)
    for samples in grouped.values():
        if len(samples) > 1:
            samples.sort(key=_TIME)
    return grouped
