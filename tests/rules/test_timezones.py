"""Day boundaries follow the patient's own time zone, across daylight-saving changes.

The program's zone is UTC; the patient lives in New York (EST -05:00, EDT -04:00; 2026 changes:
8 March 02:00 → 03:00, 1 November 02:00 → 01:00). Each test also shows what the program's zone
alone would have said, so it fails if the patient's zone were ignored.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .conftest import of, validate

NY = ZoneInfo("America/New_York")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=NY)


def spo2(when: datetime, value: float = 97) -> dict[str, Any]:
    return {"type": "oxygen-saturation", "time": when.isoformat(), "value": value, "unit": "%"}


def days_with_data(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    (obs,) = of(outputs, "Observation", "rpm-days-with-data")
    return obs


def test_days_with_data_count_the_patients_local_days_across_spring_forward(session) -> None:  # type: ignore[no-untyped-def]
    # late evening and just after midnight, local: two local days, one UTC day, each time
    readings = [spo2(local(2026, 3, 7, 23, 30)), spo2(local(2026, 3, 8, 0, 30)),
                spo2(local(2026, 3, 8, 23, 30)), spo2(local(2026, 3, 9, 0, 30))]
    mine = session("rpm-days-with-data")
    mine.settings({"timezone": "America/New_York"})
    mine.post(readings)
    mine.tick(local(2026, 3, 10, 12))
    obs = days_with_data(mine.outputs())
    validate(obs)
    assert obs["valueQuantity"]["value"] == 3  # 7, 8 and 9 March in New York
    assert obs["effectivePeriod"] == {"start": "2026-03-07", "end": "2026-04-05"}
    utc = session("rpm-days-with-data")
    utc.post(readings)
    utc.tick(local(2026, 3, 10, 12))
    assert days_with_data(utc.outputs())["valueQuantity"]["value"] == 2  # 8 and 9 March UTC


def test_a_cgm_day_of_25_hours_has_300_slots(session) -> None:  # type: ignore[no-untyped-def]
    run = session("cgm-consensus")
    run.settings({"timezone": "America/New_York"})
    first, end = local(2026, 10, 25, 0), local(2026, 11, 8, 0)  # 14 local days, 1 Nov has 25 h
    count = int((end.timestamp() - first.timestamp()) // 300)  # (wall-clock `end - first`: 14 d)
    assert count == 14 * 288 + 12
    for day in range(0, count, 288 * 2):  # two days per message
        run.post([{"type": "cgm-glucose", "value": 120, "unit": "mg/dL",
                   "time": datetime.fromtimestamp(first.timestamp() + 300 * i, NY).isoformat()}
                  for i in range(day, min(count, day + 288 * 2))])
    run.tick(datetime.fromtimestamp(end.timestamp() + 60, NY))
    by_code = {r["code"]["coding"][0]["code"]: r for r in of(run.outputs(), "Observation")}
    assert by_code["104637-4"]["valueQuantity"]["value"] == 100  # every slot, not 100.3 %
    assert by_code["104636-6"]["valueQuantity"]["value"] == 14
    assert by_code["cgm-summary"]["effectivePeriod"] == {"start": "2026-10-25",
                                                         "end": "2026-11-07"}


def test_dose_times_are_the_patients_wall_clock_across_fall_back(session) -> None:  # type: ignore[no-untyped-def]
    def run_with(zone: str | None) -> list[dict[str, Any]]:
        run = session("medication-adherence")
        if zone:
            run.settings({"timezone": zone})
        run.override("medication-adherence", {"times": ["08:00"]})
        for day in range(29, 35):  # 29 October to 3 November
            taken = local(2026, 10, 1, 8, 10) + timedelta(days=day - 1)  # 08:10 New York
            run.post([{"type": "medication-dose-taken", "time": taken.isoformat(),
                       "unit": "{dose}", "components": {"medication": f"{RXNORM}|197361",
                                                         "doses": 1}}])
            run.tick(taken + timedelta(hours=4))
        return of(run.outputs(), "Communication")

    assert run_with("America/New_York") == []  # every dose within 2 h of 08:00 local
    missed = run_with(None)  # 08:00 UTC is 03:00-04:00 in New York: every morning "missed"
    assert len(missed) >= 5


def test_the_first_weight_of_the_patients_morning_counts(session) -> None:  # type: ignore[no-untyped-def]
    def weights(zone: str | None) -> list[dict[str, Any]]:
        run = session("hf-weight-gain")
        if zone:
            run.settings({"timezone": zone})
        run.post([
            {"type": "body-weight", "time": local(2026, 11, 19, 7).isoformat(), "value": 80,
             "unit": "kg"},
            # 21:00 New York is 02:00 UTC the next day: an evening weight after dinner
            {"type": "body-weight", "time": local(2026, 11, 19, 21).isoformat(), "value": 81.6,
             "unit": "kg"},
            {"type": "body-weight", "time": local(2026, 11, 20, 7).isoformat(), "value": 80.2,
             "unit": "kg"}])
        return of(run.outputs(), "Flag")

    assert weights("America/New_York") == []
    (flag,) = weights(None)  # UTC days: the evening weight looks like a morning gain
    assert flag["status"] == "active"
