"""The synthetic cohort is deterministic and labelled; scoring counts what the docs say; a small
cohort replays end to end through a real hub."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli.simulate import app, load, run
from hub.rules.cohort import generate
from hub.rules.evaluation import Output, score
from tests.conftest import REPO


def test_same_seed_same_cohort_and_events_after_the_warm_up() -> None:
    one, two = generate(12, 24, seed=5), generate(12, 24, seed=5)
    assert [m.body for m in one.messages] == [m.body for m in two.messages]
    assert generate(12, 24, seed=6).messages[0].body != one.messages[0].body
    for event in one.events:
        assert one.start + timedelta(days=16) <= event.onset <= one.start + timedelta(days=19)
    programs = {p.program for p in one.patients}
    assert programs == {"hypertension", "heart-failure", "diabetes", "copd"}


def test_generate_writes_what_load_reads(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", str(tmp_path), "--patients", "6", "--days",
                                      "24", "--seed", "3"])
    assert result.exit_code == 0, result.output
    cohort = load(tmp_path)
    fresh = generate(6, 24, seed=3)
    assert [m.body for m in cohort.messages] == [m.body for m in fresh.messages]
    assert [(e.kind, e.onset) for e in cohort.events] == [(e.kind, e.onset) for e in fresh.events]


def test_scoring_counts_recall_delay_and_false_alerts() -> None:
    cohort = generate(20, 24, seed=11, eventful=0.5)
    eventful = [p for p in cohort.patients if p.event is not None]
    stable = [p for p in cohort.patients if p.event is None]
    assert eventful and stable
    outputs = []
    for index, p in enumerate(eventful):
        assert p.event is not None
        hours = 3 if index else 30  # the first one is detected late
        outputs.append(Output(p.id, "Flag", p.event.rules[0],
                              p.event.onset + timedelta(hours=hours)))
        outputs.append(Output(p.id, "Flag", "unrelated-rule", p.event.onset))
    outputs.append(Output(stable[0].id, "Flag", "sbp-baseline", cohort.start))
    outputs.append(Output(stable[0].id, "Communication", "device-silence", cohort.start,
                          to_patient=True))
    report = score(cohort, outputs, readings=1)
    assert report.recall == pytest.approx((len(eventful) - 1) / len(eventful))
    assert sum(len(v) for v in report.late.values()) == 1
    assert report.delays == [3.0] * (len(eventful) - 1)
    assert report.false_flags == {"sbp-baseline": 1}
    assert report.false_per_month == pytest.approx(1 / (len(stable) * 24 / 30))
    assert report.stable_nudges == {"device-silence": 1}
    assert report.other_flags == {"unrelated-rule": len(eventful)}


@pytest.mark.slow
def test_a_small_cohort_replays_through_the_hub() -> None:
    cohort = generate(5, 24, seed=21, eventful=1.0)
    outputs, readings = run(cohort, REPO / "mappings", progress=False)
    assert readings > 300
    report = score(cohort, outputs, readings)
    assert report.events == 5
    assert report.recall >= 0.6  # a handful of events: the figures come from hub simulate


def test_events_without_a_reading_in_their_first_24_hours_are_counted_apart() -> None:
    cohort = generate(40, 24, seed=3, eventful=1.0)
    shown = [p for p in cohort.patients
             if p.event is not None and p.event.kind in ("bp-shift", "weight-gain")]
    assert shown
    before = score(cohort, [], readings=1).no_data
    target = next(p for p in shown if p.id not in before.get(p.event.kind, []))  # type: ignore[union-attr]
    assert target.event is not None
    onset = target.event.onset
    # the patient skips every measurement of the first 30 h after the onset
    for message in cohort.messages:
        if message.body.get("patient", {}).get("id") == target.id:
            message.body["readings"] = [
                r for r in message.body.get("readings", ())
                if not onset <= datetime.fromisoformat(r["time"]) <= onset + timedelta(hours=30)]
    report = score(cohort, [], readings=1)
    kind = target.event.kind
    assert sorted(report.no_data[kind]) == sorted([*before.get(kind, []), target.id])
    row = report.as_dict()["by_kind"][target.event.kind]
    assert row["no_reading_within_24h"] == 1 and row["within_24h"] == 0  # still a miss
