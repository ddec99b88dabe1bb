"""Every golden test beside a mapping (mappings/**/*.test.yaml) runs in CI, one pytest case each.

The same runner as ``hub mappings test``, in-process: payload → device mapping → catalogue →
Observation, compared on content with the expected Bundle.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from hub.cli.mappings import observation_builder
from hub.mappings import golden
from hub.mappings.catalogue import MappingSet, load_mapping_set
from hub.mappings.yamlfile import load_model
from tests.conftest import REPO

ROOT = REPO / "mappings"
FILES = golden.golden_files(ROOT)
CASES = [(path, case.name) for path in FILES
         for case in load_model(path, golden.GoldenFile).cases]


@cache
def mapping_set() -> MappingSet:
    return load_mapping_set(ROOT)


@cache
def results(path: Path) -> dict[str, golden.CaseResult]:
    spec = load_model(path, golden.GoldenFile)
    return {r.name: r for r in golden.run_file(path, mapping_set(),
                                               observation_builder(spec.mapping))}


def test_every_device_mapping_has_golden_tests() -> None:
    tested = {load_model(p, golden.GoldenFile).mapping for p in FILES}
    untested = set(mapping_set().devices) - tested
    assert not untested, f"device mappings without a *.test.yaml: {sorted(untested)}"


@pytest.mark.parametrize(("path", "name"), CASES,
                         ids=[f"{p.stem.removesuffix('.test')}: {n}" for p, n in CASES])
def test_golden_case(path: Path, name: str) -> None:
    result = results(path)[name]
    assert result.passed, "\n".join(result.problems)
