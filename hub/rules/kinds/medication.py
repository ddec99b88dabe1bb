"""Kind 3: medication adherence from smart pill-bottle events.

**Input**: the pill bottle's events (connectors/pillbottle: Observations coded
``urn:iomt-fhir-hub:medication-event|dose-taken`` / ``dose-missed``, the medication as value).

**Schedule**: dose times ``times`` (HH:MM, the patient's local time) from the program or, per
patient, from an override — which ``schedule_from_request`` fills from a MedicationRequest's
``dosageInstruction.timing.repeat.timeOfDay``. A dose slot is *taken* when a dose event of the
rule's ``measure`` (for the rule's ``medication``, if set) falls within ``grace`` of it, either
side; a slot whose window closes untaken is *missed* (found by the scheduler). A bottle that
judges misses itself (``missed_measure``) reports them directly: the slot counts once, never
twice. Without a schedule, only the bottle's own misses count.

**Outputs**: each taken dose is recorded as a MedicationAdministration (why not a
MedicationStatement: R4 defines MedicationAdministration as the record of one event of a patient
consuming a medication, "as simple as swallowing a tablet", with one effective time and a
status; MedicationStatement is a summary assertion about a period of use ("is taking"), not a
per-dose record). The bottle reports that a dose was taken — nobody observed the
ingestion — so the record's performer is the patient, its ``supportingInformation`` the bottle's
event Observation and its note says how it was known. A missed slot sends the ``event`` notices
(the nudge to the patient) at once — at the instant the window closed, so the same miss always
gives the same Communication — and ``flag_misses`` misses within ``flag_days`` days raise the
Flag for the care team; it clears when the misses in that window fall below the limit.

Constant work: the slots of the last ``flag_days`` days are kept (a few per day).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.fhir.ids import stable_id, urn_identifier
from hub.rules import outputs
from hub.rules.kinds.base import Kind, State, when
from hub.rules.lifecycle import Ctx
from hub.rules.model import MedicationRule
from hub.rules.readings import Sample


def slots_between(rule: MedicationRule, start: float, end: float, zone: str) -> list[float]:
    """Dose instants (epoch s) in [start, end), from the local ``times`` of each day in
    ``zone`` (wall-clock times: 08:00 stays 08:00 across a daylight-saving change; a time the
    change skips is taken with the offset before it)."""
    if not rule.times:
        return []
    tz = ZoneInfo(zone)
    day = datetime.fromtimestamp(start, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end, tz).date()
    found: list[float] = []
    while day <= last:
        for text in rule.times:
            hour, minute = int(text[:2]), int(text[3:])
            t = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp()
            if start <= t < end:
                found.append(t)
        day += timedelta(days=1)
    return sorted(found)


def schedule_from_request(request: dict[str, Any]) -> dict[str, Any]:
    """Override params from an R4 MedicationRequest: ``times`` from timing.repeat.timeOfDay and
    ``medication`` from medicationCodeableConcept; ValueError if it gives no times."""
    times: list[str] = []
    for dosage in request.get("dosageInstruction") or []:
        repeat = ((dosage.get("timing") or {}).get("repeat") or {})
        times.extend(str(t)[:5] for t in repeat.get("timeOfDay") or [])
    if not times:
        raise ValueError("the MedicationRequest has no dosageInstruction.timing.repeat.timeOfDay;"
                         " set the rule's 'times' for this patient instead")
    params: dict[str, Any] = {"times": sorted(set(times))}
    for coding in (request.get("medicationCodeableConcept") or {}).get("coding") or []:
        params["medication"] = f"{coding.get('system')}|{coding.get('code')}"
        break
    return params


class Medication(Kind):
    def on_sample(self, ctx: Ctx, st: State, s: Sample) -> None:
        rule = ctx.rule
        assert isinstance(rule, MedicationRule)
        if not s.usable:
            return
        taken = s.values.get(rule.measure)
        missed = s.values.get(rule.missed_measure) if rule.missed_measure else None
        value = taken if taken is not None else missed
        if value is None:
            return
        if rule.medication and isinstance(value, str) and value != rule.medication:
            return  # an event of another medication's bottle
        seen: list[str] = st.setdefault("seen", [])
        if s.ref in seen:
            return  # a replay
        seen.append(s.ref)
        del seen[:-20]
        st.setdefault("until", s.t - rule.grace)
        slots: dict[str, Any] = st.setdefault("slots", {})
        slot = self._slot_for(rule, st, s.t, ctx.tz)
        if taken is not None:
            ctx.emit(self._administration(ctx, rule, s, value if isinstance(value, str)
                                          else rule.medication))
            if slot is not None:
                slots[str(int(slot))] = s.ref
            return
        # the bottle says a dose was missed (``time`` = when it was due)
        if slot is not None:
            slots[str(int(slot))] = "missed"
        st.setdefault("misses", []).append(s.t)
        self._missed(ctx, rule, st, s.t, s.t, [s.ref])

    @staticmethod
    def _slot_for(rule: MedicationRule, st: State, t: float, zone: str) -> float | None:
        """The open schedule slot within ``grace`` of ``t`` (nearest first), if any."""
        slots: dict[str, Any] = st.setdefault("slots", {})
        near = slots_between(rule, t - rule.grace, t + rule.grace + 1, zone)
        candidates = [slot for slot in near
                      if slots.get(str(int(slot))) is None and slot + rule.grace > st["until"]]
        return min(candidates, key=lambda slot: abs(slot - t)) if candidates else None

    def on_tick(self, ctx: Ctx, st: State, now: float) -> None:
        rule = ctx.rule
        assert isinstance(rule, MedicationRule)
        ctx.settle(st, now)
        until = st.setdefault("until", now)
        if now <= until:
            return
        slots: dict[str, Any] = st.setdefault("slots", {})
        misses: list[float] = st.setdefault("misses", [])
        for slot in slots_between(rule, until - rule.grace, now - rule.grace + 1, ctx.tz):
            closes = slot + rule.grace
            if closes <= until or closes > now:
                continue
            if slots.get(str(int(slot))) is None:
                slots[str(int(slot))] = "missed"
                misses.append(slot)
                self._missed(ctx, rule, st, slot, closes, [])
            elif ctx.active(st) is not None:
                self._trim(rule, st, closes)
                if len(misses) < rule.flag_misses:
                    ctx.clearing(st, closes)
        st["until"] = now
        horizon = now - rule.flag_days * 86400 - rule.grace
        for key in [k for k in slots if float(k) < horizon]:
            del slots[key]

    @staticmethod
    def _trim(rule: MedicationRule, st: State, t: float) -> None:
        misses: list[float] = st.setdefault("misses", [])
        horizon = t - rule.flag_days * 86400
        misses[:] = [m for m in misses if m > horizon]

    def _missed(self, ctx: Ctx, rule: MedicationRule, st: State, due: float, t: float,
                evidence: list[str]) -> None:
        """Nudge at once; Flag once ``flag_misses`` misses fall within ``flag_days``."""
        self._trim(rule, st, t)
        misses: list[float] = st["misses"]
        drug = f" of {rule.medication.split('|', 1)[1]}" if rule.medication else ""
        summary = (f"{rule.title}: the dose{drug} due at {when(due)} was not taken within "
                   f"{rule.grace / 3600:g} h ({len(misses)} missed in the last "
                   f"{rule.flag_days} days). Rule {rule.id} v{ctx.version}.")
        finding = {"summary": summary, "evidence": evidence,
                   "values": [["missed doses in window", len(misses), None]]}
        ctx.event(st, t, outputs.iso(due), finding, evidence)
        if len(misses) >= rule.flag_misses:
            ctx.fire(st, t, rule.flag.priority, finding)
        else:
            ctx.not_clear(st)

    def due(self, ctx: Ctx, st: State) -> float | None:
        rule = ctx.rule
        assert isinstance(rule, MedicationRule)
        own: float | None = None
        until = st.get("until")
        if until is not None and rule.times:
            upcoming = slots_between(rule, until - rule.grace + 1, until + 2 * 86400, ctx.tz)
            own = upcoming[0] + rule.grace if upcoming else None
        alert = ctx.due(st)
        candidates = [d for d in (own, alert) if d is not None]
        return min(candidates) if candidates else None

    def _administration(self, ctx: Ctx, rule: MedicationRule, s: Sample,
                        medication: str | None) -> dict[str, Any]:
        mid = stable_id("MedicationAdministration", ctx.patient, rule.id, s.ref)
        concept: dict[str, Any] = {"text": "medication from the pill bottle"}
        if medication and "|" in medication:
            system, code = medication.split("|", 1)
            concept = {"coding": [{"system": system, "code": code}]}
        return {
            "resourceType": "MedicationAdministration", "id": mid,
            "meta": outputs.rule_meta(rule.id, ctx.version),
            "identifier": [urn_identifier(mid)], "status": "completed",
            "medicationCodeableConcept": concept,
            "subject": {"reference": f"Patient/{ctx.patient}"},
            "effectiveDateTime": outputs.iso(s.t),
            "performer": [{"actor": {"reference": f"Patient/{ctx.patient}"}}],
            "supportingInformation": [{"reference": s.ref}],
            "note": [{"text": "Recorded from a smart pill bottle's dose event (the bottle "
                              "reported the dose taken; ingestion was not observed). "
                              f"Rule {rule.id} v{ctx.version}."}],
            # "Includes administrations by the patient in their home" (R4 medication-admin-category)
            "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "medication-admin-category",
                                     "code": "community", "display": "Community"}]},
        }
