"""The golden scenarios shipped in mappings/rules/scenarios pass, and a wrong expectation is
reported as a difference (so `hub rules test` can fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.mappings.yamlfile import load_model
from hub.rules.program import restrict
from hub.rules.scenarios import Runner, Scenario, Session, expand, plain, scenario_files
from tests.conftest import REPO

from .conftest import MAPPINGS, PROGRAM, validate

SCENARIOS = scenario_files(REPO / "mappings" / "rules" / "scenarios")
RUNNER = Runner(PROGRAM, MAPPINGS)


def test_there_is_a_scenario_for_every_rule_kind() -> None:
    tested = set()
    for path in SCENARIOS:
        spec = load_model(path, Scenario)
        tested.update(PROGRAM.rules[r].kind for r in spec.rules or PROGRAM.rules)
    kinds = {r.kind for r in PROGRAM.rules.values()}
    assert kinds <= tested


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_shipped_scenario_passes(path: Path) -> None:
    result = RUNNER.run(path)
    assert result.problems == []


def test_a_wrong_expectation_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "wrong.scenario.yaml"
    path.write_text("""
version: 1
name: wrong on purpose
rules: [spo2-low]
steps:
  - readings:
      - {type: oxygen-saturation, time: "2026-11-20T08:00:00Z", value: 80, unit: "%"}
      - {type: oxygen-saturation, time: "2026-11-20T09:00:00Z", value: 80, unit: "%"}
expect:
  - {resourceType: Flag, rule: spo2-low, priority: low}
""", encoding="utf-8")
    result = RUNNER.run(path)
    assert not result.passed
    assert "expected 1 Flag(rule=spo2-low, priority=low), found 0" in result.problems[0]
    assert any(p.startswith("unexpected Flag {'rule': 'spo2-low'") for p in result.problems)
    assert any(p.startswith("unexpected Communication") for p in result.problems)


def test_a_malformed_scenario_is_reported_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.scenario.yaml"
    path.write_text("version: 1\nname: bad\nsteps:\n  - tick: tomorrow\n", encoding="utf-8")
    result = RUNNER.run(path)
    assert result.problems and result.problems[0].startswith(f"{path}:4:")


def test_every_output_of_every_scenario_is_valid_r4() -> None:
    kinds: set[str] = set()
    for path in SCENARIOS:
        spec = load_model(path, Scenario)
        program = restrict(PROGRAM, spec.rules) if spec.rules else PROGRAM
        session = Session(program, MAPPINGS, patient=spec.patient)
        for step in spec.steps:
            readings = [dict(r) for r in step.readings]
            for series in step.series:
                readings += expand(series)
            if readings:
                session.post([plain(r) for r in readings])
            for moment in ([step.tick] if step.tick else []) + list(step.ticks):
                session.tick(moment)
        for resource in session.outputs():
            validate(resource)
            kinds.add(resource["resourceType"])
        session.close()
    assert kinds >= {"Flag", "Communication", "Observation"}


def test_hub_rules_lint_and_test_commands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hub.cli.rules import app

    folder = REPO / "mappings" / "rules"
    linted = CliRunner().invoke(app, ["lint", str(folder)])
    assert linted.exit_code == 0 and linted.output.startswith("ok:"), linted.output
    tested = CliRunner().invoke(app, ["test", str(folder)])
    assert tested.exit_code == 0, tested.output
    assert f"{len(SCENARIOS)} passed, 0 failed" in tested.output
    broken = tmp_path / "rules"
    broken.mkdir()
    (broken / "a.yaml").write_text("version: 1\nrules: [{id: x, kind: nope}]\n",
                                   encoding="utf-8")
    failed = CliRunner().invoke(app, ["lint", str(broken)])
    assert failed.exit_code == 1 and f"{broken}/a.yaml:2:" in failed.output


def test_hub_rules_explain_command(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import orjson
    from typer.testing import CliRunner

    from hub.cli.rules import app
    from hub.runtime import Hub
    from hub.store import inbox
    from hub.telemetry import Telemetry
    from hub.worker import drain
    from tests.conftest import make_settings

    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    monkeypatch.setenv("HUB_MAPPINGS_DIR", str(REPO / "mappings"))
    hub = Hub.build(make_settings(db_url), Telemetry.disabled())
    body = {"device": {"id": "ox"}, "patient": {"id": "explain-me"}, "readings": [
        {"type": "oxygen-saturation", "time": "2026-11-20T08:00:00Z", "value": 87, "unit": "%"},
        {"type": "oxygen-saturation", "time": "2026-11-20T09:00:00Z", "value": 86, "unit": "%"}]}
    inbox.receive(hub.engine, source="hub", channel="http", content_type="application/json",
                  body=orjson.dumps(body))
    drain(hub.pipeline, hub.engine, 10)
    hub.engine.dispose()
    shown = CliRunner().invoke(app, ["explain", "explain-me"])
    assert shown.exit_code == 0, shown.output
    assert "Active flags: 1" in shown.output
    assert "why: Low oxygen saturation: SpO2 86 % (below 90)" in shown.output
    missing = CliRunner().invoke(app, ["explain", "nobody"])
    assert missing.exit_code == 1
