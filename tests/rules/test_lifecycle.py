"""Thresholds, persistence, hysteresis and the Flag/Communication lifecycle, validated as R4."""

from __future__ import annotations

from datetime import timedelta

from hub.rules.outputs import FLAG_DETAIL, FLAG_PRIORITY, HUB_DEVICE_ID, RULE_EXT

from .conftest import PROGRAM, T0, at, of, summary_of, validate


def spo2(minutes: float, value: float) -> dict:  # type: ignore[type-arg]
    return {"type": "oxygen-saturation", "time": at(minutes), "value": value, "unit": "%"}


def test_one_flag_per_episode_with_evidence_priority_and_rule(session) -> None:  # type: ignore[no-untyped-def]
    run = session("spo2-low")
    first = run.post([spo2(0, 89), spo2(60, 88)])
    flags = of(first, "Flag")
    assert len(flags) == 1
    flag = validate(flags[0]).model_dump(mode="json", exclude_none=True)
    assert flag["status"] == "active" and flag["period"] == {"start": "2026-11-20T09:00:00Z"}
    assert flag["author"]["reference"] == f"Device/{HUB_DEVICE_ID}"
    assert flag["subject"]["reference"] == f"Patient/{run.patient}"
    details = [e["valueReference"]["reference"] for e in flag["extension"]
               if e["url"] == FLAG_DETAIL]
    assert len(details) == 2 and all(d.startswith("Observation/") for d in details)
    priority = next(e for e in flag["extension"] if e["url"] == FLAG_PRIORITY)
    assert priority["valueCodeableConcept"]["coding"][0] == {
        "system": "http://hl7.org/fhir/flag-priority-code", "code": "PM",
        "display": "Medium priority"}
    rule = next(e for e in flag["extension"] if e["url"] == RULE_EXT)
    parts = {p["url"]: p for p in rule["extension"]}
    assert parts["id"]["valueString"] == "spo2-low"
    assert parts["version"]["valueString"] == str(PROGRAM.versions["spo2-low"]) == "3"
    values = [p for p in rule["extension"] if p["url"] == "value"]
    assert [v["extension"][1]["valueQuantity"]["value"] for v in values] == [89, 88]
    # the hub Device (author) is written with the first outputs
    (device,) = of(first, "Device")
    validate(device)
    # more low readings: same Flag, no new version, no new Communication
    again = run.post([spo2(120, 87), spo2(180, 89)])
    assert of(again, "Flag") == [] and of(again, "Communication") == []


def test_hysteresis_band_neither_fires_nor_clears(session) -> None:  # type: ignore[no-untyped-def]
    run = session("spo2-low")
    run.post([spo2(0, 88), spo2(10, 88)])
    run.post([spo2(20, 91)])  # between the limit (90) and clear_at (92)
    run.tick(T0 + timedelta(days=3))
    assert of(run.outputs(), "Flag")[0]["status"] == "active"
    run.post([spo2(60 * 24 * 3, 93)])
    run.tick(T0 + timedelta(days=4, minutes=-1))
    assert of(run.outputs(), "Flag")[0]["status"] == "active"
    run.tick(T0 + timedelta(days=4))
    (flag,) = of(run.outputs(), "Flag")
    assert flag["status"] == "inactive"
    assert flag["period"]["end"] == "2026-11-24T08:00:00Z"  # cleared + 24 h, not the tick time


def test_persistence_restarts_after_a_gap(session) -> None:  # type: ignore[no-untyped-def]
    run = session("glucose-cgm-very-low")
    cgm = [{"type": "cgm-glucose", "time": at(m), "value": 50, "unit": "mg/dL"}
           for m in (0, 5, 30, 35)]  # 2 + 2 consecutive, 25 min apart: never 3 in a row
    run.post(cgm)
    assert of(run.outputs(), "Flag") == []
    run.post([{"type": "cgm-glucose", "time": at(40), "value": 50, "unit": "mg/dL"}])
    assert len(of(run.outputs(), "Flag")) == 1


def test_a_new_episode_after_resolution_is_a_new_flag(session) -> None:  # type: ignore[no-untyped-def]
    run = session("spo2-low")
    run.post([spo2(0, 88), spo2(10, 88), spo2(20, 96)])
    run.tick(T0 + timedelta(days=2))
    run.post([spo2(60 * 72, 87), spo2(60 * 73, 86)])
    flags = sorted(of(run.outputs(), "Flag"), key=lambda f: f["period"]["start"])
    assert [f["status"] for f in flags] == ["inactive", "active"]
    assert flags[0]["id"] != flags[1]["id"]


def test_communication_is_r4_and_about_the_evidence(session) -> None:  # type: ignore[no-untyped-def]
    run = session("bp-severe")
    run.post([{"type": "blood-pressure", "time": at(0), "unit": "mm[Hg]",
               "components": {"systolic": 182, "diastolic": 100}},
              {"type": "blood-pressure", "time": at(5), "unit": "mm[Hg]",
               "components": {"systolic": 185, "diastolic": 104}}])
    comms = of(run.outputs(), "Communication")
    assert {c["recipient"][0].get("reference", c["recipient"][0].get("display"))
            for c in comms} == {f"Patient/{run.patient}", "Remote monitoring care team"}
    for comm in comms:
        parsed = validate(comm).model_dump(mode="json", exclude_none=True)
        assert parsed["status"] == "completed" and parsed["priority"] == "urgent"
        about = [a["reference"] for a in parsed["about"]]
        assert about[0].startswith("Flag/") and len(about) == 3
        assert parsed["sender"]["reference"] == f"Device/{HUB_DEVICE_ID}"
        assert summary_of(comm).startswith("Severe hypertension")
    care = next(c for c in comms if "display" in c["recipient"][0])
    assert care["category"][0]["coding"][0]["code"] == "alert"
    assert "Systolic BP 185 mm[Hg] (at or above 180)" in care["payload"][0]["contentString"]


def test_suppression_window_holds_back_a_repeat_notice(session) -> None:  # type: ignore[no-untyped-def]
    run = session("glucose-meter-very-low")
    meter = [{"type": "glucose-capillary", "time": at(m), "value": v, "unit": "mg/dL"}
             for m, v in [(0, 50), (30, 90), (60 * 5, 90), (60 * 5 + 5, 48)]]
    run.post(meter[:3])  # low, then clear for 5 h: the 4-hour resolve window ends the Flag
    run.tick(T0 + timedelta(hours=5))
    run.post(meter[3:])  # a second episode 5 h later: a new Flag, but inside the 6 h window
    assert len(of(run.outputs(), "Flag")) == 2
    assert len(of(run.outputs(), "Communication")) == 1


def test_held_readings_never_move_a_rule(session) -> None:  # type: ignore[no-untyped-def]
    run = session("spo2-low", "hf-weight-gain")
    run.post([{"type": "body-weight", "time": at(0), "value": 80, "unit": "kg"},
              {"type": "body-weight", "time": at(days=1), "value": 0, "unit": "kg"},
              {"type": "body-weight", "time": at(days=1, minutes=5), "value": 80.2,
               "unit": "kg"}])
    stored = of(run.outputs(), "Flag")
    assert stored == []


def test_an_escalation_limit_raises_at_once(session) -> None:  # type: ignore[no-untyped-def]
    run = session("spo2-low")
    run.post([spo2(0, 83)])  # one reading below 85: no waiting for a second
    (flag,) = of(run.outputs(), "Flag")
    priority = next(e for e in flag["extension"] if e["url"] == FLAG_PRIORITY)
    assert priority["valueCodeableConcept"]["coding"][0]["code"] == "PH"
    waiting = session("spo2-low")
    waiting.override("spo2-low", {"escalate": [{"priority": "high", "immediate": False,
                                                "any": [{"measure": "spo2", "below": 85}]}]})
    waiting.post([spo2(0, 83)])
    assert of(waiting.outputs(), "Flag") == []


def test_persistence_tolerates_one_missed_reading_of_a_twice_daily_schedule(session) -> None:  # type: ignore[no-untyped-def]
    later = session("spo2-low")
    later.post([spo2(0, 89), spo2(25 * 60, 88)])  # the 12 h reading was skipped; 25 h apart
    assert [f["status"] for f in of(later.outputs(), "Flag")] == ["active"]
    too_late = session("spo2-low")
    too_late.post([spo2(0, 89), spo2(37 * 60, 88)])  # more than 36 h: the count restarts
    assert of(too_late.outputs(), "Flag") == []
