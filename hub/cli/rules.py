"""``hub rules lint|test|explain``: check rule files, run golden scenarios, explain a patient.

- ``lint [PATH]`` validates every rules file under PATH (default ``HUB_MAPPINGS_DIR/rules``) and
  every scenario file, printing every problem as ``file:line:column: field: problem``; exit 1 if
  there is any.
- ``test [PATH]`` runs the golden scenarios under PATH (or the one file given): one PASS/FAIL line
  each, the differences under each failure, a summary; exit 1 on any failure.
- ``explain PATIENT`` prints the patient's baselines and rule states, and why each active Flag
  exists (``--json`` for the raw report).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import typer

from hub.cli.report import CaseTally
from hub.errors import MappingError
from hub.mappings.catalogue import load_mapping_set
from hub.mappings.yamlfile import load_model
from hub.rules.engine import RulesEngine
from hub.rules.explain import as_text, explain, resolve_patient
from hub.rules.program import load_program
from hub.rules.scenarios import Runner, Scenario, scenario_files
from hub.settings import Settings
from hub.store.db import make_engine

app = typer.Typer(no_args_is_help=True, help="Rules: lint, golden scenarios, explain a patient")


def _lines(exc: MappingError) -> list[str]:
    return [str(p) for p in exc.problems] or [exc.message]


def _rules_dir(path: Path | None) -> Path:
    return path or Settings().mappings_dir / "rules"


def _program_dir(target: Path) -> Path:
    """The rules folder a scenario path belongs to (the nearest ancestor with rule files)."""
    for folder in [target, *target.parents] if target.is_dir() else target.parents:
        if any(p for p in folder.glob("*.yaml") if not p.name.endswith(".scenario.yaml")):
            return folder
    return target if target.is_dir() else target.parent


@app.command("lint")
def lint(path: Path | None = typer.Argument(None, help="rules folder (default "
                                                       "HUB_MAPPINGS_DIR/rules)")) -> None:
    """Validate rules and scenario files; every problem at once as file:line:column."""
    folder = _rules_dir(path)
    problems: list[str] = []
    count = 0
    try:
        program = load_program(_program_dir(folder))
        count += len(set(program.files.values()))
    except MappingError as exc:
        problems.extend(_lines(exc))
    for file in scenario_files(folder):
        count += 1
        try:
            load_model(file, Scenario)
        except MappingError as exc:
            problems.extend(_lines(exc))
    for problem in problems:
        typer.echo(problem)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {folder}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {count} file(s) under {folder}")


@app.command("test")
def test(path: Path | None = typer.Argument(None, help="rules folder or one *.scenario.yaml "
                                                       "(default HUB_MAPPINGS_DIR/rules)")) -> None:
    """Run golden scenarios: readings in, the expected Flags/Communications out."""
    target = _rules_dir(path)
    program_dir = _program_dir(target)
    try:
        program = load_program(program_dir)
        mappings = load_mapping_set(program_dir.parent)
    except MappingError as exc:
        for line in _lines(exc):
            typer.echo(line)
        typer.echo("hub: the rules or mappings do not load; fix them first (hub rules lint)",
                   err=True)
        raise typer.Exit(1) from None
    runner = Runner(program, mappings)
    tally = CaseTally()
    for file in scenario_files(target):
        result = runner.run(file)
        tally.record(file.name, result.name, result.passed, result.problems)
    tally.finish()


@app.command("explain")
def explain_patient(
    patient: str = typer.Argument(..., help="Patient id, system|value, or a hub patient value"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Current baselines and rule states, and why each active Flag exists."""
    settings = Settings()
    engine = RulesEngine(settings.mappings_dir / "rules")
    db = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        with db.connect() as conn:
            patient_id = resolve_patient(conn, patient)
            if patient_id is None:
                typer.echo(f"hub: no patient '{patient}'", err=True)
                raise typer.Exit(1)
            report = explain(engine, conn, patient_id)
    finally:
        db.dispose()
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(as_text(report))
