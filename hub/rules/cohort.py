"""A synthetic remote-monitoring cohort with injected events and their ground truth.

Synthetic only (no patient data): N patients x D days of the streams home programs produce,
with a daily rhythm, noise, missing data and events injected at known times:

- **hypertension**: cuff BP + pulse twice daily (07:00, 19:00 +- 30 min), pill bottle twice
  daily. Event: *bp-shift* (SBP +25-40, DBP +10-20 mm Hg from the onset on).
- **heart failure**: morning weight, BP + pulse twice daily, oximeter SpO2 + pulse each
  morning, pill bottle. Events: *weight-gain* (1.6-2.4 kg overnight, or 0.6-0.8 kg a day for
  4-5 days) or *missed-doses* (the patient stops taking the tablets for 2-3 days).
- **diabetes**: CGM every 5 min (daily rhythm, meals, sensor changes, drop-outs), BP daily.
  Event: *hypoglycaemia* (a 30-75 min dip to 38-52 mg/dL at night).
- **COPD**: oximeter SpO2 + pulse twice daily, temperature daily, with the per-patient
  overrides a clinician sets for a hypercapnic target (SpO2 limit 88 %, NEWS2 scale 2).
  Event: *desaturation* (SpO2 8-10 points under the patient's usual 92.5-94 %, with a faster
  pulse, for 2 days).
- any program: *silence* (the devices stop for 2-4 days).

The ground truth of an event is its ``onset``: when the injected condition first holds in the
noise-free signal (a 5 lb/week gain counts from the day the true gain reaches 2.3 kg, a silence
from the first reading that did not come, missed doses from the first dose not taken). Each
label names the rules whose outputs count as detecting it. Readings are grouped into messages
per device per hour, as device clouds batch them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
AMLODIPINE = {"system": RXNORM, "code": "197361", "display": "amlodipine 5 MG Oral Tablet"}
DETECTED_BY = {
    "bp-shift": ["sbp-baseline", "dbp-baseline", "bp-severe"],
    "weight-gain": ["hf-weight-gain"],
    "missed-doses": ["medication-adherence"],
    "hypoglycaemia": ["glucose-cgm-very-low"],
    "desaturation": ["spo2-low", "news2", "spo2-baseline"],
    "silence": ["device-silence", "cgm-silence"],
}
EVENTS_BY_PROGRAM = {
    "hypertension": ["bp-shift", "silence"],
    "heart-failure": ["weight-gain", "missed-doses", "silence"],
    "diabetes": ["hypoglycaemia", "silence"],
    "copd": ["desaturation", "silence"],
}
OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    # below the BTS 88-92 % target for hypercapnic risk, not below the 94-98 % one
    "copd": {"spo2-low": {"any": [{"measure": "spo2", "below": 88, "clear_at": 90}],
                          "escalate": [{"priority": "high",
                                        "any": [{"measure": "spo2", "below": 85}]}]},
             "news2": {"spo2_scale": 2, "on_oxygen": False}},
}


@dataclass
class Event:
    """An injected event. ``onset``: when it meets its clinical definition (time to detect
    counts from here); ``start``: when the injected change began (a gradual gain starts days
    before it reaches 5 lb), the earliest an output may count as detecting it."""

    patient: str
    kind: str
    onset: datetime
    detail: str
    rules: list[str]
    start: datetime | None = None

    @property
    def begins(self) -> datetime:
        return self.start or self.onset

    def label(self) -> dict[str, Any]:
        return {"patient": self.patient, "kind": self.kind, "onset": self.onset.isoformat(),
                "start": self.begins.isoformat(), "detail": self.detail,
                "detected_by": self.rules}


@dataclass
class Patient:
    id: str
    program: str
    seed: int
    event: Event | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    silent: tuple[datetime, datetime] | None = None


@dataclass
class Message:
    """One inbound message: when it arrives, the source (connector) and the JSON body."""

    at: datetime
    source: str
    body: dict[str, Any]


@dataclass
class Cohort:
    start: datetime
    days: int
    patients: list[Patient]
    messages: list[Message]

    @property
    def events(self) -> list[Event]:
        return [p.event for p in self.patients if p.event is not None]

    def labels(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "days": self.days,
                "patients": [{"id": p.id, "program": p.program, "overrides": p.overrides,
                              "event": p.event.label() if p.event else None}
                             for p in self.patients]}


class _Gen:
    """Readings of one patient; every draw comes from the patient's own seeded generator."""

    def __init__(self, patient: Patient, start: datetime, days: int) -> None:
        self.p = patient
        self.rng = random.Random(patient.seed)
        self.start = start
        self.days = days
        self.by_hour: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.sbp = self.rng.gauss(132, 9)
        self.dbp = self.rng.gauss(80, 5)
        self.hr = self.rng.gauss(72, 7)
        self.weight = self.rng.uniform(62, 105)
        self.spo2 = 97.0 if patient.program != "copd" else self.rng.uniform(92.5, 94)

    def silent(self, when: datetime) -> bool:
        return self.p.silent is not None and self.p.silent[0] <= when < self.p.silent[1]

    def add(self, device: str, when: datetime, reading: dict[str, Any]) -> None:
        if when >= self.start + timedelta(days=self.days) or self.silent(when):
            return
        hour = int((when - self.start).total_seconds() // 3600)
        self.by_hour.setdefault((device, hour), []).append(reading)

    def jitter(self, day: int, hour: float, minutes: float) -> datetime:
        return self.start + timedelta(days=day, hours=hour,
                                      minutes=self.rng.uniform(-minutes, minutes))

    def shift(self, when: datetime, kind: str) -> float:
        event = self.p.event
        return 1.0 if event is not None and event.kind == kind and when >= event.onset else 0.0


def _bp(g: _Gen, day: int, hour: float, extra: tuple[float, float] = (0, 0)) -> None:
    if g.rng.random() < 0.1:
        return  # a skipped measurement
    when = g.jitter(day, hour, 30)
    morning = 3 if hour < 12 else -3
    sbp = g.sbp + morning + g.rng.gauss(0, 7) + extra[0] * g.shift(when, "bp-shift")
    dbp = g.dbp + morning / 2 + g.rng.gauss(0, 5) + extra[1] * g.shift(when, "bp-shift")
    pulse = g.hr + g.rng.gauss(0, 5)
    t = when.isoformat()
    g.add("cuff", when, {"type": "blood-pressure", "time": t, "unit": "mm[Hg]",
                         "components": {"systolic": round(sbp), "diastolic": round(dbp)}})
    g.add("cuff", when, {"type": "heart-rate", "time": t, "value": round(pulse), "unit": "/min"})


def _oximeter(g: _Gen, day: int, hour: float, drop: float) -> None:
    if g.rng.random() < 0.1:
        return
    when = g.jitter(day, hour, 30)
    down = drop * g.shift(when, "desaturation")
    if g.p.event is not None and g.p.event.kind == "desaturation" \
            and when >= g.p.event.onset + timedelta(days=2):
        down = 0.0  # the exacerbation is over after two days
    value = min(100.0, g.spo2 - down + g.rng.gauss(0, 1.0))
    pulse = g.hr + 12 * (down > 0) + g.rng.gauss(0, 5)
    t = when.isoformat()
    g.add("oximeter", when, {"type": "oxygen-saturation", "time": t, "value": round(value),
                             "unit": "%"})
    g.add("oximeter", when, {"type": "heart-rate-oximetry", "time": t, "value": round(pulse),
                             "unit": "/min"})


def _weights(g: _Gen, gain: list[float]) -> None:
    drift = 0.0
    for day in range(g.days):
        drift += g.rng.gauss(0, 0.05)
        if g.rng.random() < 0.1:
            continue
        when = g.jitter(day, 7, 20)
        value = g.weight + drift + gain[day] + g.rng.gauss(0, 0.3)
        g.add("scale", when, {"type": "body-weight", "time": when.isoformat(),
                              "value": round(value, 1), "unit": "kg"})


def _doses(g: _Gen, stop: tuple[datetime, datetime] | None) -> None:
    for day in range(g.days):
        for hour in (8, 20):
            due = g.start + timedelta(days=day, hours=hour)
            if stop is not None and stop[0] <= due < stop[1]:
                continue
            if g.rng.random() < 0.015:
                continue  # an occasional forgotten dose (true, not injected)
            when = due + timedelta(minutes=g.rng.gauss(12, 20))
            g.add("bottle", when, {"type": "dose-taken", "time": when.isoformat(),
                                   "medication": AMLODIPINE, "doses": 1})


def _cgm(g: _Gen) -> None:
    event = g.p.event
    dip_start = dip_end = None
    dip_low = 0.0
    if event is not None and event.kind == "hypoglycaemia":
        dip_start = event.onset  # the glucose goes below 54 mg/dL here
        dip_end = dip_start + timedelta(minutes=g.rng.uniform(30, 75))
        dip_low = g.rng.uniform(40, 50)
    base = g.rng.uniform(135, 165)
    noise = 0.0
    # a new sensor every 10 days: 2 hours without data while it warms up
    changes = [g.start + timedelta(days=g.rng.uniform(8, 10) + 10 * k) for k in range(9)]
    for i in range(g.days * 288):
        when = g.start + timedelta(minutes=5 * i)
        if any(c <= when < c + timedelta(hours=2) for c in changes) or g.rng.random() < 0.03:
            continue  # sensor warm-up, or a lost signal
        day_frac = (i % 288) / 288
        meals = sum(55 * math.exp(-(((day_frac - m) * 24) ** 2) / 1.2)
                    for m in (8 / 24, 13 / 24, 19 / 24))
        noise = 0.85 * noise + g.rng.gauss(0, 6)
        value = base + meals - 15 * math.cos(2 * math.pi * day_frac) + noise
        if dip_start is not None and dip_end is not None and dip_start <= when < dip_end:
            value = dip_low + g.rng.uniform(-2, 2)
        g.add("cgm", when, {"type": "cgm-glucose", "time": when.isoformat(),
                            "value": round(max(40.0, min(400.0, value))), "unit": "mg/dL"})


def _plan_event(p: Patient, rng: random.Random, start: datetime, days: int) -> None:
    kind = rng.choice(EVENTS_BY_PROGRAM[p.program])
    day = rng.randint(16, days - 6)  # after the baselines' warm-up, with time left to see it
    rules = DETECTED_BY[kind]
    if kind == "bp-shift":
        onset = start + timedelta(days=day, hours=rng.uniform(0, 24))
        p.event = Event(p.id, kind, onset, "", rules)
    elif kind == "weight-gain":
        onset = start + timedelta(days=day)  # the day the true gain meets the guidance
        p.event = Event(p.id, kind, onset, "", rules)
    elif kind == "missed-doses":
        onset = start + timedelta(days=day, hours=rng.choice([8, 20]))
        p.event = Event(p.id, kind, onset, "", rules)
    elif kind == "hypoglycaemia":
        onset = start + timedelta(days=day, hours=rng.uniform(1, 5))
        p.event = Event(p.id, kind, onset, "", rules)
    elif kind == "desaturation":
        onset = start + timedelta(days=day, hours=rng.choice([7, 19]), minutes=-30)
        p.event = Event(p.id, kind, onset, "", rules)
    else:
        onset = start + timedelta(days=day, hours=rng.uniform(0, 24))
        p.silent = (onset, onset + timedelta(days=rng.uniform(2, 4)))
        p.event = Event(p.id, kind, onset, "", rules)


def _readings(p: Patient, start: datetime, days: int) -> dict[tuple[str, int], list[Any]]:
    g = _Gen(p, start, days)
    rng = g.rng
    extra = (rng.uniform(25, 40), rng.uniform(10, 20))
    if p.program in ("hypertension", "heart-failure"):
        for day in range(days):
            for hour in (7, 19):
                _bp(g, day, hour, extra)
        stop = None
        if p.event is not None and p.event.kind == "missed-doses":
            stop = (p.event.onset, p.event.onset + timedelta(days=rng.uniform(2, 3)))
            p.event.detail = f"no doses until {stop[1].isoformat()}"
        _doses(g, stop)
    if p.program == "heart-failure":
        gain = [0.0] * days
        if p.event is not None and p.event.kind == "weight-gain":
            first = (p.event.onset - start).days
            if rng.random() < 0.5:
                step = rng.uniform(1.6, 2.4)
                for d in range(first, days):
                    gain[d] = step
                p.event.detail = f"+{step:.1f} kg overnight"
            else:
                rate = rng.uniform(0.6, 0.8)
                ramp = rng.randint(4, 5)
                begin = first - (math.ceil(2.3 / rate) - 1)  # true gain reaches 2.3 on `first`
                for d in range(max(0, begin), days):
                    gain[d] = rate * min(d - begin + 1, ramp)
                p.event.detail = f"+{rate:.2f} kg/day for {ramp} days"
                p.event.start = start + timedelta(days=begin)
        _weights(g, gain)
        for day in range(days):
            _oximeter(g, day, 7.5, 0)
    if p.program == "diabetes":
        _cgm(g)
        for day in range(days):
            _bp(g, day, 7)
    if p.program == "copd":
        drop = rng.uniform(8, 10)
        for day in range(days):
            for session in (7.5, 19.5):
                _oximeter(g, day, session, drop)
            when = g.jitter(day, 8, 30)
            g.add("thermometer", when, {"type": "body-temperature", "time": when.isoformat(),
                                        "value": round(rng.gauss(36.7, 0.25), 1),
                                        "unit": "Cel"})
    return g.by_hour


def generate(patients: int, days: int, seed: int, *, eventful: float = 0.5,
             start: datetime | None = None) -> Cohort:
    """A cohort of ``patients`` over ``days``; a share ``eventful`` gets one injected event."""
    begin = start or datetime(2026, 1, 5, tzinfo=UTC)
    rng = random.Random(seed)
    programs = ["hypertension"] * 4 + ["heart-failure"] * 3 + ["diabetes"] * 2 + ["copd"]
    people: list[Patient] = []
    for index in range(patients):
        p = Patient(f"sim-{seed}-{index:04d}", programs[index % len(programs)],
                    rng.randrange(2**31))
        p.overrides = OVERRIDES.get(p.program, {})
        if rng.random() < eventful:
            _plan_event(p, rng, begin, days)
        people.append(p)
    messages: list[Message] = []
    for p in people:
        for (device, hour), readings in _readings(p, begin, days).items():
            at = begin + timedelta(hours=hour + 1)  # the cloud syncs at the end of the hour
            if device == "bottle":
                body = {"bottle": {"id": f"{p.id}-bottle"}, "patient": {"id": p.id},
                        "events": readings}
                messages.append(Message(at, "pillbottle", body))
            else:
                body = {"device": {"id": f"{p.id}-{device}"}, "patient": {"id": p.id},
                        "readings": readings}
                messages.append(Message(at, "hub", body))
        if p.program in ("hypertension", "heart-failure"):
            # the care team gives the medication rule the patient's dose times (an override)
            p.overrides = {**p.overrides, "medication-adherence": {
                "times": ["08:00", "20:00"], "medication": f"{RXNORM}|197361"}}
    messages.sort(key=lambda m: m.at)
    return Cohort(begin, days, people, messages)
