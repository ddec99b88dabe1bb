"""The conformance suite every connector inherits (as Singer SDK's ``get_tap_test_class``).

A connector's whole test module is one line::

    TestWithings = connector_test_class(WithingsConnector, fixtures="fixtures/devices/withings",
                                        envelope={"account": "12345678"})

The class checks that:

- the connector is registered under its name (entry point group ``hub.connectors``);
- its ``Config`` is a pydantic model with a JSON Schema, its defaults construct, and an unknown
  field is refused (``extra="forbid"``);
- every fixture decodes and converts through the *real* hub — ``hub convert SOURCE FILE...``, i.e.
  connector → mapping set under ``mappings/`` → identity → normalize, on a scratch SQLite store —
  with no error except "unassigned device" (placing a reading on a patient is the registry's job,
  not the connector's), and at least one Observation; fixtures listed in ``refused`` must instead
  be refused with the reason given;
- the golden tests beside the connector's mapping pass (``hub mappings test``).

It runs the hub as a user does, in subprocesses: connectors may import only ``hub.contracts`` and
``hub.errors`` (import-linter holds this module to that too), and it keeps the suite honest — no
mocks, the installed entry points and the committed mapping files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hub.contracts import Connector
from hub.errors import DataError

REPO = Path(__file__).resolve().parent.parent
HUB = str(Path(sys.executable).parent / "hub")
UNASSIGNED = "unassigned device"


@dataclass(frozen=True)
class Converted:
    """What ``hub convert`` printed for one fixture."""

    returncode: int
    bundle: dict[str, Any] | None
    errors: list[str]

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        entries = (self.bundle or {}).get("entry", [])
        return [e["resource"] for e in entries if e["resource"]["resourceType"] == resource_type]


def run_hub(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``hub`` command with a throwaway database and this repository's mappings."""
    env = {**os.environ, "HUB_ENV": "test", "HUB_MAPPINGS_DIR": str(REPO / "mappings"),
           "HUB_SECRET_KEY": "conformance-suite-secret"}
    return subprocess.run([HUB, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


def convert_files(source: str, paths: list[Path],
                  envelope: dict[str, Any] | None) -> dict[str, Converted]:
    """``hub convert SOURCE FILE...`` once for all fixtures (a hub process costs seconds to
    start); with ``envelope`` each fixture is posted wrapped in it. Errors are split per file by
    their ``FILE:`` prefix. A file without errors yielded at least one reading (a payload that
    yields none is an error: "holds no readings"); its Observations may be shared with another
    fixture holding the same reading (same deterministic id), so they are not split per file."""
    with tempfile.TemporaryDirectory(prefix="hub-conformance-") as scratch:
        targets = []
        for path in paths:
            target = path
            if envelope is not None:
                payload = json.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
                target = Path(scratch) / path.name
                target.write_text(json.dumps({**envelope, "response": payload}))
            targets.append(target)
        done = run_hub("convert", source, *map(str, targets))
    bundle = json.loads(done.stdout) if done.stdout.strip().startswith("{") else None
    results = {}
    for path, target in zip(paths, targets, strict=True):
        prefix = f"{target}: "
        errors = [line.removeprefix(prefix) for line in done.stderr.splitlines()
                  if line.startswith(prefix)]
        results[path.name] = Converted(1 if errors else 0, bundle, errors)
    return results


def connector_test_class(
    connector: type[Connector],
    *,
    fixtures: str | Path,
    envelope: dict[str, Any] | None = None,
    refused: dict[str, str] | None = None,
) -> type:
    """A pytest class checking ``connector`` against the hub's connector contract.

    ``fixtures``: folder of payloads (relative to the repository); ``envelope``: wrap each one
    as ``{**envelope, "response": payload}`` (vendor-cloud answers that do not name their
    account); ``refused``: file name → text the refusal reason must contain.
    """
    folder = (REPO / fixtures) if not Path(fixtures).is_absolute() else Path(fixtures)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".json") if folder.is_dir() else []
    expected_refusals = dict(refused or {})

    @cache
    def converted() -> dict[str, Converted]:
        return convert_files(connector.name, files, envelope)

    class ConnectorConformance:
        def test_has_fixtures(self) -> None:
            assert files, f"no *.json fixtures in {folder}"
            unknown = set(expected_refusals) - {p.name for p in files}
            assert not unknown, f"refused fixtures that do not exist: {sorted(unknown)}"

        def test_is_registered_by_entry_point(self) -> None:
            found = {ep.name: ep.value for ep in entry_points(group="hub.connectors")}
            assert connector.name in found, f"no entry point '{connector.name}' (pip install -e .)"
            assert found[connector.name] == f"{connector.__module__}:{connector.__name__}"

        def test_config_schema(self) -> None:
            assert issubclass(connector.Config, BaseModel)
            schema = connector.Config.model_json_schema()
            assert schema["type"] == "object"
            assert schema.get("additionalProperties") is False
            instance = connector()
            assert isinstance(instance.config, connector.Config)

        def test_invalid_config_refused(self) -> None:
            with pytest.raises(ValidationError):
                connector.Config.model_validate({"no_such_setting": 1})

        def test_undecodable_body_is_a_data_error(self) -> None:
            with pytest.raises(DataError):
                connector().decode(b"\x00 not a payload", next(iter(connector.content_types)))

        @pytest.mark.parametrize("name", [p.name for p in files])
        def test_fixture_converts_or_is_refused_with_reason(self, name: str) -> None:
            result = converted()[name]
            if name in expected_refusals:
                assert result.errors, "expected a refusal with a reason, got a clean conversion"
                reason = expected_refusals[name]
                assert any(reason in e for e in result.errors), result.errors
                return
            real_errors = [e for e in result.errors if UNASSIGNED not in e]
            assert not real_errors, real_errors
            assert result.bundle is not None, "hub convert printed no Bundle"

        def test_fixtures_produce_observations(self) -> None:
            results = converted()
            if all(name in expected_refusals for name in results):
                pytest.skip("every fixture of this class is a refusal")
            placed = any(UNASSIGNED in e for r in results.values() for e in r.errors)
            some = next(iter(results.values()))
            assert some.resources("Observation") or placed, "no Observation at all"

        def test_golden_outputs_match(self) -> None:
            mapping = connector().mapping_name
            test_file = REPO / "mappings" / "devices" / f"{mapping}.test.yaml"
            assert test_file.is_file(), f"no golden tests beside the mapping: {test_file}"
            done = run_hub("mappings", "test", str(test_file))
            assert done.returncode == 0, done.stdout + done.stderr

    ConnectorConformance.__name__ = f"Test{connector.__name__}"
    return ConnectorConformance
