"""A broken mapping reports every problem at once, each with file:line:column and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hub.errors import MappingError
from hub.mappings.catalogue import load_mapping_set
from tests.conftest import REPO

BROKEN = """\
version: 1
name: acme
colour: blue
measurements:
  - each: readings
    type: item.kind
    type_map: {bp: blood-pressur}
    time_format: epoch_minutes
    device: {system: "'urn:acme'", value: item.serial}
    values:
      systolic: item.sys
      diastolic: item.dia[
  - each: readings
    type: "'heart-rate'"
    time: item.at
    device: {system: "'urn:acme'"}
    values: {value: item.hr}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "mappings" / "types", tmp_path / "types")
    (tmp_path / "devices").mkdir()
    return tmp_path


def problems_of(root: Path) -> dict[str, tuple[int | None, int | None, str]]:
    with pytest.raises(MappingError) as caught:
        load_mapping_set(root)
    return {p.field: (p.line, p.column, p.problem) for p in caught.value.problems}


def test_every_problem_is_reported_with_its_position(root: Path) -> None:
    path = root / "devices" / "acme.yaml"
    path.write_text(BROKEN)
    found = problems_of(root)
    # line:column of the offending key (1-based), for each problem in the file
    assert found["colour"][:2] == (3, 1)
    assert "Extra inputs" in found["colour"][2]
    assert found["measurements[0].time"][:2] == (5, 5)  # missing: points at the rule
    assert "required" in found["measurements[0].time"][2]
    assert found["measurements[0].time_format"][:2] == (8, 5)
    assert "iso8601" in found["measurements[0].time_format"][2]
    assert found["measurements[0].values.diastolic"][:2] == (12, 7)
    assert "not a valid JMESPath expression" in found["measurements[0].values.diastolic"][2]
    assert found["measurements[1].device.value"][:2] == (16, 5)  # missing: its parent
    assert len(found) == 5
    assert "\n" not in found["measurements[0].values.diastolic"][2]  # one line each


def test_an_unknown_measurement_type_is_positioned_at_its_key(root: Path) -> None:
    good = BROKEN.replace("colour: blue\n", "").replace("item.dia[", "item.dia") \
        .replace("    time_format: epoch_minutes\n", "    time: item.at\n") \
        .replace("{system: \"'urn:acme'\"}", "{system: \"'urn:acme'\", value: item.serial}")
    (root / "devices" / "acme.yaml").write_text(good)
    found = problems_of(root)
    line, column, problem = found["measurements[0].type_map.bp"]
    assert (line, column) == (6, 16)
    assert problem == "unknown measurement type 'blood-pressur'"


def test_problems_of_several_files_come_together(root: Path) -> None:
    (root / "devices" / "a.yaml").write_text("version: 2\nname: a\nmeasurements: []\n")
    (root / "devices" / "b.yaml").write_text("version: 1\nname: b\n")
    with pytest.raises(MappingError) as caught:
        load_mapping_set(root)
    shown = [str(p) for p in caught.value.problems]
    assert any(s.endswith("a.yaml:1:1: version: Value error, unsupported version 2; this hub "
                          "reads (1,)") for s in shown), shown
    assert any("a.yaml:3:1: measurements:" in s for s in shown), shown
    assert any("b.yaml:1:1: measurements: Field required" in s for s in shown), shown


def test_yaml_syntax_errors_are_positioned(root: Path) -> None:
    (root / "devices" / "bad.yaml").write_text("version: 1\nname: bad\nmeasurements:\n"
                                               "  - each: [readings\n    type: x\n")
    found = problems_of(root)
    (line, column, problem), = found.values()
    assert (line, column) == (5, 9)
    assert problem.startswith("YAML syntax:")


def test_a_type_catalogue_error_names_the_type(root: Path) -> None:
    (root / "types" / "extra.yaml").write_text(
        "version: 1\ntypes:\n  pulse:\n    codes: []\n    value: quantity\n")
    found = problems_of(root)
    assert found["types.pulse.codes"][:2] == (4, 5)
