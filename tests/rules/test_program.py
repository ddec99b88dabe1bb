"""Rule files: validated like mapping files (every problem at once, file:line:column),
versioned, cross-checked; overrides validated by the same models."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import MappingError
from hub.rules.model import parse_duration
from hub.rules.program import load_program, with_override

from .conftest import PROGRAM


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


MEASURES = """
version: 1
measures:
  spo2: {title: SpO2, unit: "%", codes: ["http://loinc.org|59408-5"]}
"""


def test_every_problem_of_every_file_at_once_with_positions(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MEASURES)
    write(tmp_path, "b.yaml", """
version: 2
rules:
  - id: low
    kind: threshold
    title: Low
    source: test
    any: [{measure: spo2, below: 90, above: 95}]
    consecutive: 0
  - id: Bad Id
    kind: thresold
    title: x
    source: y
""")
    write(tmp_path, "c.yaml", "version: 1\nrules: [{id: x, kind: silence, title: t, "
                              "source: s, after: soon}]\n")
    with pytest.raises(MappingError) as caught:
        load_program(tmp_path)
    shown = [str(p) for p in caught.value.problems]
    assert any(s.startswith(f"{tmp_path}/b.yaml:8:11: rules[0].any[0]:")
               and "exactly one of below" in s for s in shown)
    assert any(s.startswith(f"{tmp_path}/b.yaml:9:5: rules[0].consecutive:") for s in shown)
    assert any(s.startswith(f"{tmp_path}/b.yaml:10:5: rules[1]:") and "'thresold'" in s
               for s in shown)
    assert any(s.startswith(f"{tmp_path}/c.yaml:2:53: rules[0].after:") and "duration" in s
               for s in shown)
    assert len(shown) == 4


def test_cross_file_checks(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MEASURES)
    rule = ("  - {id: %s, kind: threshold, title: t, source: s, "
            "any: [{measure: %s, below: 90}]}\n")
    write(tmp_path, "b.yaml", "version: 1\nrules:\n" + rule % ("low", "spo2"))
    write(tmp_path, "c.yaml", "version: 1\nrules:\n" + rule % ("other", "pulse")
          + rule % ("low", "spo2"))
    write(tmp_path, "d.yaml", "version: 1\nrules:\n  - {id: w, kind: weight-gain, title: t, "
                              "source: s, measure: spo2, day_gain: 1, week_gain: 2, "
                              "timezone: Mars/Olympus}\n")
    with pytest.raises(MappingError) as caught:
        load_program(tmp_path)
    text = "\n".join(str(p) for p in caught.value.problems)
    assert f"{tmp_path}/c.yaml:4:6: rules[1].id: 'low' already defined in b.yaml" in text
    assert "measure 'pulse' is not defined" in text
    assert "d.yaml:3:95: rules[0].timezone: Value error, 'Mars/Olympus' is not a known time " \
        "zone" in text


def test_versions_come_from_the_file_or_the_rule(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MEASURES + """
rules:
  - {id: a, kind: threshold, title: t, source: s, any: [{measure: spo2, below: 90}]}
  - {id: b, version: 5, kind: threshold, title: t, source: s,
     any: [{measure: spo2, below: 90}]}
""")
    program = load_program(tmp_path)
    assert program.versions == {"a": 1, "b": 5}


def test_scenarios_are_not_program_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MEASURES)
    write(tmp_path, "x.scenario.yaml", "not: a rules file\n")
    assert load_program(tmp_path).measures.keys() == {"spo2"}


def test_shipped_program_loads_and_every_rule_cites_a_source() -> None:
    assert len(PROGRAM.rules) >= 12
    kinds = {r.kind for r in PROGRAM.rules.values()}
    assert kinds >= {"threshold", "weight-gain", "baseline", "silence", "days-with-data",
                     "cgm-summary", "news2"}
    assert all(len(r.source) > 10 for r in PROGRAM.rules.values())


def test_overrides_are_validated_by_the_rule_model() -> None:
    rule = PROGRAM.rules["spo2-low"]
    lower = with_override(rule, {"any": [{"measure": "spo2", "below": 88, "clear_at": 90}]})
    assert lower.any[0].limit == 88 and lower.id == "spo2-low"
    with pytest.raises(ValueError, match="consecutive"):
        with_override(rule, {"consecutive": 0})
    with pytest.raises(ValueError, match="cannot change 'kind'"):
        with_override(rule, {"kind": "silence"})
    with pytest.raises(ValueError, match="Extra inputs"):
        with_override(rule, {"no_such_field": 1})


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400),
                                                ("14d", 14 * 86400), ("2w", 14 * 86400),
                                                (30, 30), ("1.5h", 5400)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-5m", -1, True, "5 hours"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)
