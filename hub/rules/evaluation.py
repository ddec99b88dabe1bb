"""Score the rules' outputs against a cohort's ground truth (``hub simulate evaluate``).

- **Recall within 24 h**: an injected event is detected when one of the rules its label names
  wrote a Flag (``period.start``) or a Communication (``sent``) for that patient after the
  injected change began (for most events its onset; a gradual weight gain begins days before it
  reaches 5 lb) and no later than 24 h after the onset; **time to detect** is that output's
  time minus the onset (0 when the rule saw it coming).
- **Events without data**: an event whose first reading of the measure that shows it (e.g. a
  weight for a weight gain) came more than 24 h after its onset — the patient skipped the
  measurements — cannot be found within 24 h by any rule; they are counted per kind apart (and
  stay in the recall's denominator), so a miss is told apart from a rule that looked away.
- **False alerts per stable patient-month**: Flags (one per episode) raised for patients with
  no injected event, per 30 days of monitoring. Every Flag counts, whatever the rule: a Flag is
  what reaches a clinician's work list. Communications to patients (reminders of a real gap or
  a real missed dose) are reported apart, as are Flags on eventful patients that their event
  does not explain.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hub.rules.cohort import Cohort, Message

WINDOW = timedelta(hours=24)
EARLY = timedelta(minutes=5)
# The canonical reading types that show each kind of event (silence and missed doses are
# absences: no reading shows them).
SHOWN_BY = {"bp-shift": frozenset({"blood-pressure"}), "weight-gain": frozenset({"body-weight"}),
            "desaturation": frozenset({"oxygen-saturation"}),
            "hypoglycaemia": frozenset({"cgm-glucose"})}


@dataclass(frozen=True)
class Output:
    """A Flag or Communication reduced to what scoring needs."""

    patient: str  # the cohort's patient id
    kind: str  # Flag | Communication
    rule: str
    at: datetime
    to_patient: bool = False


@dataclass
class Report:
    patients: int
    stable: int
    days: int
    readings: int
    messages: int
    detected: dict[str, list[float]] = field(default_factory=dict)  # kind → delays (h)
    missed: dict[str, list[str]] = field(default_factory=dict)  # kind → patient ids
    late: dict[str, list[float]] = field(default_factory=dict)  # kind → delays beyond 24 h
    false_flags: dict[str, int] = field(default_factory=dict)  # rule → count (stable)
    other_flags: dict[str, int] = field(default_factory=dict)  # rule → count (eventful)
    stable_nudges: dict[str, int] = field(default_factory=dict)  # rule → count
    no_data: dict[str, list[str]] = field(default_factory=dict)  # kind → patients (see above)

    @property
    def events(self) -> int:
        return sum(len(v) for v in self.detected.values()) + \
            sum(len(v) for v in self.missed.values()) + sum(len(v) for v in self.late.values())

    @property
    def recall(self) -> float:
        found = sum(len(v) for v in self.detected.values())
        return found / self.events if self.events else 1.0

    @property
    def delays(self) -> list[float]:
        return sorted(d for v in self.detected.values() for d in v)

    @property
    def stable_months(self) -> float:
        return self.stable * self.days / 30

    @property
    def false_per_month(self) -> float:
        months = self.stable_months
        return sum(self.false_flags.values()) / months if months else 0.0

    def as_dict(self) -> dict[str, Any]:
        delays = self.delays
        return {
            "patients": self.patients, "stable_patients": self.stable, "days": self.days,
            "readings": self.readings, "messages": self.messages, "events": self.events,
            "recall_24h": round(self.recall, 4),
            "median_hours_to_detect": round(statistics.median(delays), 2) if delays else None,
            "p95_hours_to_detect": round(_quantile(delays, 0.95), 2) if delays else None,
            "max_hours_to_detect": round(delays[-1], 2) if delays else None,
            "false_alerts_per_stable_patient_month": round(self.false_per_month, 3),
            "false_flags_by_rule": self.false_flags, "by_kind": {
                kind: {"events": len(self.detected.get(kind, [])) + len(self.missed.get(kind, []))
                       + len(self.late.get(kind, [])),
                       "within_24h": len(self.detected.get(kind, [])),
                       "late_hours": [round(x, 1) for x in self.late.get(kind, [])],
                       "no_reading_within_24h": len(self.no_data.get(kind, [])),
                       "median_hours": round(statistics.median(self.detected[kind]), 2)
                       if self.detected.get(kind) else None}
                for kind in sorted(set(self.detected) | set(self.missed) | set(self.late))},
            "other_flags_on_eventful_patients": self.other_flags,
            "patient_reminders_per_stable_patient_month": round(
                sum(self.stable_nudges.values()) / self.stable_months, 3)
            if self.stable_months else 0.0,
        }


def _quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def score(cohort: Cohort, outputs: list[Output], readings: int) -> Report:
    """Recall, time to detect and false alerts of ``outputs`` against ``cohort``."""
    stable = [p for p in cohort.patients if p.event is None]
    report = Report(len(cohort.patients), len(stable), cohort.days, readings,
                    len(cohort.messages))
    eventful = {p.id: p.event for p in cohort.patients if p.event is not None}
    sent: dict[str, list[Message]] = {}
    for message in cohort.messages:
        patient = message.body.get("patient", {}).get("id")
        if patient in eventful:
            sent.setdefault(patient, []).append(message)
    for patient, injected in eventful.items():
        if not _observed(sent.get(patient, []), injected.kind, injected.onset):
            report.no_data.setdefault(injected.kind, []).append(patient)
    by_patient: dict[str, list[Output]] = {}
    for out in sorted(outputs, key=lambda o: o.at):
        by_patient.setdefault(out.patient, []).append(out)
    for p in cohort.patients:
        mine = by_patient.get(p.id, [])
        event = p.event
        if event is None:
            for out in mine:
                if out.kind == "Flag":
                    report.false_flags[out.rule] = report.false_flags.get(out.rule, 0) + 1
                elif out.to_patient:
                    report.stable_nudges[out.rule] = report.stable_nudges.get(out.rule, 0) + 1
            continue
        hits = [o for o in mine if o.rule in event.rules and o.at >= event.begins - EARLY]
        if not hits:
            report.missed.setdefault(event.kind, []).append(p.id)
        else:
            delay = max(0.0, (hits[0].at - event.onset).total_seconds() / 3600)
            bucket = report.detected if delay <= WINDOW.total_seconds() / 3600 else report.late
            bucket.setdefault(event.kind, []).append(delay)
        for out in mine:
            if out.kind == "Flag" and out.rule not in event.rules:
                report.other_flags[out.rule] = report.other_flags.get(out.rule, 0) + 1
    return report


def _observed(messages: list[Message], kind: str, onset: datetime) -> bool:
    """Whether one of a patient's ``messages`` holds a reading that shows an event of ``kind``
    within 24 h of its onset."""
    types = SHOWN_BY.get(kind)
    if types is None:
        return True  # an absence: nothing to wait for
    for message in messages:
        if message.at < onset:
            continue
        for reading in message.body.get("readings", ()):
            if reading.get("type") in types and \
                    onset <= datetime.fromisoformat(reading["time"]) <= onset + WINDOW:
                return True
    return False


def as_text(report: Report) -> str:
    data = report.as_dict()
    lines = [
        f"Cohort: {report.patients} patients x {report.days} days; {report.events} injected "
        f"events, {report.stable} stable patients; {report.readings} readings in "
        f"{report.messages} messages",
        f"Recall within 24 h: {sum(len(v) for v in report.detected.values())}/{report.events} = "
        f"{100 * report.recall:.1f} % (target >= 95 %)",
    ]
    for kind, row in data["by_kind"].items():
        late = f", late: {row['late_hours']} h" if row["late_hours"] else ""
        unseen = (f" ({row['no_reading_within_24h']} with no reading in their first 24 h)"
                  if row["no_reading_within_24h"] else "")
        lines.append(f"  {kind:<14} {row['within_24h']}/{row['events']} within 24 h{unseen}, "
                     f"median {row['median_hours']} h{late}")
    lines.append(f"Time to detect: median {data['median_hours_to_detect']} h, p95 "
                 f"{data['p95_hours_to_detect']} h, max {data['max_hours_to_detect']} h")
    lines.append(f"False alerts per stable patient-month: "
                 f"{data['false_alerts_per_stable_patient_month']} "
                 f"({sum(report.false_flags.values())} Flags over "
                 f"{report.stable_months:.1f} stable patient-months; target <= 0.5) "
                 f"{report.false_flags or ''}")
    lines.append(f"Patient reminders per stable patient-month (real gaps and missed doses): "
                 f"{data['patient_reminders_per_stable_patient_month']}")
    if report.other_flags:
        lines.append(f"Flags on eventful patients their event does not explain: "
                     f"{report.other_flags}")
    return "\n".join(lines)
