"""Personal baselines: warm-up, sustained deviation, exclusion of what they flag, slow adoption,
constant state."""

from __future__ import annotations

from datetime import timedelta

import orjson

from hub.rules import store
from hub.rules.kinds.baseline import baseline_stats

from .conftest import T0, at, of, summary_of


def bp(hours: float, systolic: float, diastolic: float = 80) -> dict:  # type: ignore[type-arg]
    return {"type": "blood-pressure", "time": at(hours=hours), "unit": "mm[Hg]",
            "components": {"systolic": systolic, "diastolic": diastolic}}


STEADY = [126, 131, 124, 129, 133, 127, 122, 130]


def steady(days: int, start_hours: float = 0) -> list[dict]:  # type: ignore[type-arg]
    return [bp(start_hours + 12 * i, STEADY[i % len(STEADY)]) for i in range(days * 2)]


def state(run, rule: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    with run.db.connect() as conn:
        text = store.states_of(conn, run.patient)[rule]
    return orjson.loads(text)  # type: ignore[no-any-return]


def test_stats_are_median_and_mad() -> None:
    assert baseline_stats([[0, 1.0], [1, 2.0], [2, 3.0], [3, 4.0], [9, 100.0]]) == \
        [3.0, 1.0, 5.0, 9.0]


def test_no_firing_during_warm_up(session) -> None:  # type: ignore[no-untyped-def]
    run = session("sbp-baseline")
    run.post([*steady(3), bp(72, 170), bp(84, 172)])  # 6 samples over 2.5 days: warming up
    assert of(run.outputs(), "Flag") == []


def test_sustained_rise_fires_with_the_baseline_named(session) -> None:  # type: ignore[no-untyped-def]
    run = session("sbp-baseline")
    run.post(steady(14))
    run.post([bp(14 * 24, 148)])
    assert of(run.outputs(), "Flag") == []  # one measurement 20 above: not sustained yet
    run.post([bp(14 * 24 + 12, 150)])
    (flag,) = of(run.outputs(), "Flag")
    text = summary_of(flag)
    assert "mean of the last 2 measurements 149 mm[Hg]" in text
    assert "above this patient's baseline 128" in text
    rule = next(e for e in flag["extension"] if e["url"] == "urn:iomt-fhir-hub:rule")
    baseline = [p for p in rule["extension"] if p["url"] == "baseline"]
    assert baseline[0]["extension"][1]["valueQuantity"]["value"] == 128
    method = next(p["valueString"] for p in rule["extension"] if p["url"] == "method")
    assert "median and MAD of 28 samples" in method


def test_a_large_step_fires_on_one_measurement(session) -> None:  # type: ignore[no-untyped-def]
    run = session("sbp-baseline")
    run.post(steady(14))
    run.post([bp(14 * 24, 160)])  # 32 above the median: past the 25 mm Hg jump limit
    (flag,) = of(run.outputs(), "Flag")
    assert "the latest measurement (a step past the rule's jump limit) 160" in summary_of(flag)


def test_a_session_of_repeat_readings_is_one_sample(session) -> None:  # type: ignore[no-untyped-def]
    run = session("sbp-baseline")
    run.post([bp(i / 60, 120 + i) for i in range(3)])  # three cuff readings a minute apart
    st = state(run, "sbp-baseline")
    assert st["sess"][2] == 3 and "buf" not in st  # still one open session, not admitted yet


def test_deviating_sessions_are_not_admitted_until_accept_after(session) -> None:  # type: ignore[no-untyped-def]
    run = session("sbp-baseline")
    run.post(steady(14))
    high = [bp(14 * 24 + 12 * i, 160 + (i % 3)) for i in range(30)]  # 15 days at ~161
    run.post(high[:10])
    st = state(run, "sbp-baseline")
    assert st["stats"][0] == 128 and st["excluded"] >= 8  # the baseline did not chase it
    run.post(high[10:])
    st = state(run, "sbp-baseline")
    assert st["stats"][0] > 150  # after 7 days active, the new level was adopted
    run.post([bp(14 * 24 + 12 * 30 + 12 * i, 161) for i in range(8)])
    run.tick(T0 + timedelta(days=40))
    (flag,) = of(run.outputs(), "Flag")
    assert flag["status"] == "inactive"  # deviation gone against the adopted baseline


def test_state_is_bounded(session) -> None:  # type: ignore[no-untyped-def]
    run = session("sbp-baseline")
    run.post(steady(60))
    st = state(run, "sbp-baseline")
    assert len(st["buf"]) <= 28 and len(st.get("recent", [])) <= 1
    assert len(orjson.dumps(st)) < 4000


def spo2_series(days: int, values: list[float]) -> list[dict]:  # type: ignore[type-arg]
    return [{"type": "oxygen-saturation", "time": at(hours=12 * i),
             "value": values[i % len(values)], "unit": "%"} for i in range(days * 2)]


def test_a_fall_in_spo2_from_the_patients_own_level(session) -> None:  # type: ignore[no-untyped-def]
    usual = [93, 94, 94, 95, 93, 94]  # a COPD patient's 92-94 %: over spo2-low's limits
    after = at(hours=12 * 14)
    rise = session("spo2-baseline")
    rise.post([*spo2_series(7, usual), {"type": "oxygen-saturation", "time": after,
                                        "value": 99, "unit": "%"}])
    assert of(rise.outputs(), "Flag") == []  # falls only
    small = session("spo2-baseline")
    small.post([*spo2_series(7, usual), {"type": "oxygen-saturation", "time": after,
                                         "value": 91, "unit": "%"}])
    assert of(small.outputs(), "Flag") == []  # 3 points: within the patient's usual range
    fall = session("spo2-baseline")
    fall.post([*spo2_series(7, usual), {"type": "oxygen-saturation", "time": after,
                                        "value": 89, "unit": "%"}])
    (flag,) = of(fall.outputs(), "Flag")
    assert "SpO2: the latest measurement (a step past the rule's jump limit) 89 % is 5 % below " \
           "this patient's baseline 94 %" in summary_of(flag)


def test_a_deviation_the_other_way_is_a_new_episode(session) -> None:  # type: ignore[no-untyped-def]
    run = session("sbp-baseline")
    run.post([*steady(7), bp(168, 100), bp(180, 98)])  # a fall of ~30 mm Hg: a low Flag
    (low,) = of(run.outputs(), "Flag")
    assert "below this patient's baseline" in summary_of(low)
    run.post([bp(192, 170)])  # then a rise past the jump limit
    flags = {f["status"]: f for f in of(run.outputs(), "Flag")}
    assert flags["inactive"]["id"] == low["id"]
    assert flags["inactive"]["period"]["end"] == at(hours=192).replace("+00:00", "Z")
    assert "above this patient's baseline" in summary_of(flags["active"])
    notices = of(run.outputs(), "Communication")
    assert len(notices) == 2  # the raise of each episode
