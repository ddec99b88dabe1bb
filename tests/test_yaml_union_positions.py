"""A problem inside a discriminated union's member is positioned at the field itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from hub.errors import MappingError
from hub.mappings.yamlfile import load_model, union_tags
from hub.rules.model import RulesFile
from hub.sync.config import DestinationsFile


class _Cuff(BaseModel):
    kind: Literal["cuff"]
    systolic_max: int


class _Scale(BaseModel):
    kind: Literal["smart-scale"]
    kg_max: float


class _Fleet(BaseModel):
    version: int
    devices: list[Annotated[_Cuff | _Scale, Field(discriminator="kind")]]


def test_the_member_names_come_from_the_model() -> None:
    assert union_tags(_Fleet) == {"cuff", "smart-scale"}
    # The hub's own files: every rule kind and every destination and auth type.
    assert {"threshold", "news2", "medication-adherence"} <= union_tags(RulesFile)
    assert {"fhir", "healthlake", "smart", "sigv4"} <= union_tags(DestinationsFile)


def test_a_new_members_field_error_points_at_the_field(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("version: 1\ndevices:\n  - kind: cuff\n    systolic_max: 300\n"
                    "  - kind: smart-scale\n    kg_max: heavy\n")
    with pytest.raises(MappingError) as caught:
        load_model(path, _Fleet)
    [problem] = caught.value.problems
    assert (problem.field, problem.line, problem.column) == ("devices[1].kg_max", 6, 5)
