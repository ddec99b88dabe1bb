"""The destinations file reports every problem at once, as file:line:column and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import ConfigurationError
from hub.sync.config import load_destinations

BROKEN = """\
version: 1
destinations:
  - name: ehr
    type: fhir
    base_url: not a url
  - name: lake
    type: healthlake
    region: Mars-1
    datastore_id: abc123
"""


def test_every_problem_is_positioned_at_its_field_without_the_type_tag(tmp_path: Path) -> None:
    path = tmp_path / "destinations.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigurationError) as caught:
        load_destinations(path)
    found = {(p.field, p.line, p.column) for p in caught.value.problems}
    # pydantic names the union member (``destinations[1].healthlake.region``); the file has no
    # such key, so the position and the field are those of ``region`` itself.
    assert found == {("destinations[0].base_url", 5, 5), ("destinations[1].region", 8, 5)}
    assert all(p.file == str(path) for p in caught.value.problems)


def test_a_yaml_syntax_error_is_a_positioned_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "destinations.yaml"
    path.write_text("version: 1\ndestinations: [\n")
    with pytest.raises(ConfigurationError) as caught:
        load_destinations(path)
    # The configuration's own error class (not the mapping loader's), titled for this file.
    assert type(caught.value) is ConfigurationError
    assert str(caught.value).startswith(f"{path}: invalid destinations file\n")
    [problem] = caught.value.problems
    assert problem.file == str(path) and problem.line == 3
    assert problem.problem.startswith("YAML syntax")


def test_an_unreadable_file_says_why(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigurationError) as caught:
        load_destinations(path)
    assert type(caught.value) is ConfigurationError
    assert str(caught.value) == f"{path}: cannot read (No such file or directory)"


def test_a_list_at_the_top_level_is_refused_at_line_one(tmp_path: Path) -> None:
    path = tmp_path / "destinations.yaml"
    path.write_text("- name: ehr\n")
    with pytest.raises(ConfigurationError) as caught:
        load_destinations(path)
    assert [(p.line, p.column, p.problem) for p in caught.value.problems] == \
        [(1, 1, "expected a mapping at the top level")]
