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
