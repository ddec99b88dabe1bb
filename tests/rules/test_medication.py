"""Medication adherence: schedules (from the program, an override or a MedicationRequest), dose
records as MedicationAdministration, nudges per miss, the care-team Flag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.rules.kinds.medication import schedule_from_request, slots_between

from .conftest import PROGRAM, of, validate

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
DAY = datetime(2026, 11, 20, tzinfo=UTC)


def dose(when: datetime, kind: str = "taken", code: str = "197361") -> dict:  # type: ignore[type-arg]
    return {"type": f"medication-dose-{kind}", "time": when.isoformat(), "unit": "{dose}",
            "components": {"medication": f"{RXNORM}|{code}", "doses": 1}}


def test_slots_follow_local_time_across_a_dst_change() -> None:
    rule = PROGRAM.rules["medication-adherence"].model_copy(update={"times": ["08:00"]})
    start = datetime(2026, 10, 31, tzinfo=UTC).timestamp()
    slots = slots_between(rule, start, start + 3 * 86400, "America/New_York")  # type: ignore[arg-type]
    hours = [datetime.fromtimestamp(t, UTC).hour for t in slots]
    assert hours == [12, 13, 13]  # 08:00 EDT, then 08:00 EST after 1 November


def test_schedule_from_a_medication_request() -> None:
    request = {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active",
               "intent": "order", "subject": {"reference": "Patient/p"},
               "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "197361"}]},
               "dosageInstruction": [{"timing": {"repeat": {
                   "frequency": 2, "period": 1, "periodUnit": "d",
                   "timeOfDay": ["20:00:00", "08:00:00"]}}}]}
    validate(request)
    assert schedule_from_request(request) == {"times": ["08:00", "20:00"],
                                              "medication": f"{RXNORM}|197361"}
    with pytest.raises(ValueError, match="timeOfDay"):
        schedule_from_request({"dosageInstruction": [{"text": "twice a day"}]})


def test_taken_doses_are_r4_medication_administrations(session) -> None:  # type: ignore[no-untyped-def]
    run = session("medication-adherence")
    run.post([dose(DAY + timedelta(hours=8, minutes=3))])
    (record,) = of(run.outputs(), "MedicationAdministration")
    parsed = validate(record).model_dump(mode="json", exclude_none=True)
    assert parsed["status"] == "completed"
    assert parsed["medicationCodeableConcept"]["coding"][0] == {"system": RXNORM,
                                                                "code": "197361"}
    assert parsed["effectiveDateTime"] == "2026-11-20T08:03:00Z"
    assert parsed["supportingInformation"][0]["reference"].startswith("Observation/")
    assert parsed["performer"][0]["actor"]["reference"] == f"Patient/{run.patient}"
    assert "ingestion was not observed" in parsed["note"][0]["text"]
    run.post([dose(DAY + timedelta(hours=8, minutes=3))])  # the same event again
    assert len(of(run.outputs(), "MedicationAdministration")) == 1


def test_no_schedule_means_only_the_bottles_own_misses_count(session) -> None:  # type: ignore[no-untyped-def]
    run = session("medication-adherence")
    run.post([dose(DAY + timedelta(hours=8), "taken")])
    run.tick(DAY + timedelta(days=3))
    assert of(run.outputs(), "Communication") == []  # no schedule: nothing judged missed
    run.post([dose(DAY + timedelta(days=3, hours=8), "missed")])
    (nudge,) = of(run.outputs(), "Communication")
    validate(nudge)
    assert nudge["category"][0]["coding"][0]["code"] == "reminder"
    assert nudge["sent"] == "2026-11-23T08:00:00Z"


def test_another_medication_is_not_this_rules_business(session) -> None:  # type: ignore[no-untyped-def]
    run = session("medication-adherence")
    run.override("medication-adherence", {"times": ["08:00"],
                                          "medication": f"{RXNORM}|197361"})
    run.tick(DAY + timedelta(hours=1))  # the scheduler picks the new schedule up
    run.post([dose(DAY + timedelta(hours=8), code="314076")])  # lisinopril's bottle
    run.tick(DAY + timedelta(hours=11))
    assert of(run.outputs(), "MedicationAdministration") == []
    assert len(of(run.outputs(), "Communication")) == 1  # amlodipine 08:00: missed


def test_good_adherence_resolves_the_flag(session) -> None:  # type: ignore[no-untyped-def]
    run = session("medication-adherence")
    run.override("medication-adherence", {"times": ["08:00"]})
    run.post([dose(DAY + timedelta(hours=8))])  # starts the schedule
    for day in range(1, 4):
        run.tick(DAY + timedelta(days=day, hours=11))  # three mornings missed
    (flag,) = of(run.outputs(), "Flag")
    assert flag["status"] == "active"
    for day in range(4, 16):
        run.post([dose(DAY + timedelta(days=day, hours=8, minutes=10))])
        run.tick(DAY + timedelta(days=day, hours=11))
    (flag,) = of(run.outputs(), "Flag")
    assert flag["status"] == "inactive"
