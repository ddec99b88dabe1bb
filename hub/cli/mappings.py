"""``hub mappings lint|test|schema``: check, test and document mapping files without Python.

- ``lint [PATH]`` validates every mapping, catalogue and golden-test file under PATH (default
  ``HUB_MAPPINGS_DIR``) and prints every problem at once as ``file:line:column: field: problem``;
  exit 1 if there is any.
- ``test [PATH]`` runs every ``*.test.yaml`` under PATH (or the one file given): one PASS/FAIL line
  per case, the differences under each failure, then a summary line; exit 1 on any failure.
  ``--update`` rewrites the expected files from what the mappings produce now (review the diff).
- ``schema`` regenerates ``mappings/schema/*.schema.json`` from the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hub.cli.report import CaseTally
from hub.contracts import Measurement
from hub.errors import ErrorLocation, MappingError
from hub.fhir.ids import registry_id, stable_id
from hub.mappings import golden, jsonschema
from hub.mappings.catalogue import MappingSet, load_mapping_set
from hub.mappings.hl7v2.tables import hl7v2_file_model
from hub.mappings.schema import DeviceMapping, TypeCatalogue, TypeSpec
from hub.mappings.yamlfile import load_model, position
from hub.normalize.observation import Lineage, build_observation
from hub.rules.program import load_program
from hub.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Mapping files: lint, golden tests, JSON Schema")


def observation_builder(source: str) -> golden.ToFhir:
    """Stage 2 for golden tests and the debugger: a fresh hub's ids, no store.

    Patients and devices get the ids a fresh hub would register them under (deterministic from
    their identifiers); a reading without a patient keeps no subject (a live hub would place it
    through the device's assignment).
    """
    lineage = Lineage(stable_id("mapping-test", source), source)  # meta.source: a valid urn:uuid

    def build(m: Measurement, spec: TypeSpec) -> dict[str, Any]:
        patient = registry_id("Patient", m.patient) if m.patient is not None else None
        return build_observation(m, spec, patient_id=patient,
                                 device_id=registry_id("Device", m.device), lineage=lineage)

    return build


def _default_root() -> Path:
    return Settings().mappings_dir


def _echo_problems(problems: list[ErrorLocation]) -> None:
    for problem in problems:
        typer.echo(str(problem))


def lint_path(path: Path) -> tuple[list[ErrorLocation], int, MappingSet | None]:
    """Every problem under ``path`` (a mappings folder or one file), how many files were read,
    and the folder's mapping set when it loaded."""
    if path.is_file():
        return _lint_file(path), 1, None
    problems: list[ErrorLocation] = []
    mapping_set: MappingSet | None = None
    try:
        mapping_set = load_mapping_set(path)
    except MappingError as exc:
        problems.extend(exc.problems or [ErrorLocation(str(path), None, None, "", exc.message)])
    tests = golden.golden_files(path)
    for test in tests:
        try:
            spec = load_model(test, golden.GoldenFile)
        except MappingError as exc:
            problems.extend(exc.problems)
            continue
        if mapping_set is not None and spec.mapping not in mapping_set.devices:
            problems.append(ErrorLocation(str(test), None, None, "mapping",
                                          f"no device mapping named '{spec.mapping}'"))
    count = len(mapping_set.files) if mapping_set is not None else 0
    return problems, count + len(tests), mapping_set


def sampled_rule_warnings(mapping_set: MappingSet, root: Path) -> list[str]:
    """A type a device mapping groups into SampledData that an enabled rule reads: the rules
    read per-reading quantities, so grouped readings are invisible to them (README, "Grouping
    high-rate readings"). Legal, and sometimes meant, hence a warning, not a problem."""
    rules_dir = root / "rules"
    if not rules_dir.is_dir():
        return []
    try:
        program = load_program(rules_dir)
    except MappingError:
        return []  # the rules files' own problems are reported by `hub rules lint`
    warnings: list[str] = []
    for compiled in mapping_set.devices.values():
        for mtype in compiled.mapping.sampled:
            spec = mapping_set.types.get(mtype)
            codes = [f"{c.system}|{c.code}" for c in spec.codes] if spec else []
            readers = sorted({rid for key in codes for measure, _ in program.by_code.get(key, [])
                              for rid in program.by_measure.get(measure, ())})
            if readers:
                path = root / compiled.file
                line, col = position(path, ("sampled", mtype))
                where = f"{path}:{line}:{col}" if line is not None else str(path)
                warnings.append(f"{where}: sampled.{mtype}: warning: grouped readings are "
                                f"invisible to the rules that read this type "
                                f"({', '.join(readers)})")
    return warnings


def _lint_file(path: Path) -> list[ErrorLocation]:
    try:
        if path.name.endswith(".test.yaml"):
            load_model(path, golden.GoldenFile)
        elif path.parent.name == "types" or "types" in path.parts:
            load_model(path, TypeCatalogue)
        elif path.parent.name == "hl7v2":  # MDC table, settings or a sender's local codes
            load_model(path, hl7v2_file_model(path))
        else:
            load_model(path, DeviceMapping)
    except MappingError as exc:
        return exc.problems or [ErrorLocation(str(path), None, None, "", exc.message)]
    return []


@app.command("lint")
def lint(path: Path | None = typer.Argument(None, help="mappings folder or one file "
                                                       "(default HUB_MAPPINGS_DIR)")) -> None:
    """Validate mapping files; every problem at once as file:line:column: field: problem."""
    target = path or _default_root()
    problems, count, mapping_set = lint_path(target)
    if mapping_set is not None and not problems:
        for warning in sampled_rule_warnings(mapping_set, target):
            typer.echo(warning, err=True)
    if problems:
        _echo_problems(problems)
        typer.echo(f"{len(problems)} problem(s) in {target}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {count} file(s) under {target}")


@app.command("test")
def test(
    path: Path | None = typer.Argument(None, help="mappings folder or one *.test.yaml "
                                                  "(default HUB_MAPPINGS_DIR)"),
    update: bool = typer.Option(False, "--update", help="rewrite expected files from what the "
                                                        "mappings produce now; review the diff"),
) -> None:
    """Run golden tests: payload → expected FHIR, compared on content."""
    target = path or _default_root()
    root = golden.mappings_root(target)
    try:
        mapping_set = load_mapping_set(root)
    except MappingError as exc:
        _echo_problems(exc.problems)
        typer.echo(f"hub: mappings under {root} do not load; fix them first "
                   "(hub mappings lint)", err=True)
        raise typer.Exit(1) from None
    tally = CaseTally()
    for test_file in golden.golden_files(target):
        try:
            spec = load_model(test_file, golden.GoldenFile)
        except MappingError as exc:
            _echo_problems(exc.problems)
            tally.failed += 1
            continue
        results = golden.run_file(test_file, mapping_set, observation_builder(spec.mapping),
                                  update=update)
        for result in results:
            tally.record(_relative(result.file), result.name, result.passed, result.problems)
    tally.finish()


@app.command("schema")
def schema(path: Path | None = typer.Argument(None, help="mappings folder "
                                                         "(default HUB_MAPPINGS_DIR)")) -> None:
    """Regenerate the JSON Schemas (mappings/schema/*.schema.json) from the models."""
    folder = (path or _default_root()) / "schema"
    changed = jsonschema.write(folder)
    for file in changed:
        typer.echo(f"wrote {file}")
    typer.echo(f"{len(jsonschema.SCHEMAS)} schema(s) in {folder}, {len(changed)} changed")


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
