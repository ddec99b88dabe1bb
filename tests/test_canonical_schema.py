"""The published JSON Schema of the canonical format agrees with what the hub accepts."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import REPO
from tests.readings import canonical

SCHEMA = json.loads((REPO / "mappings/schema/hub-reading.schema.json").read_text())


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", sorted((REPO / "fixtures/demo").glob("*.json")),
                         ids=lambda p: p.name)
def test_demo_fixtures_follow_the_schema(path) -> None:
    Draft202012Validator(SCHEMA).validate(json.loads(path.read_text()))


def test_test_payloads_follow_the_schema() -> None:
    validator = Draft202012Validator(SCHEMA)
    validator.validate(canonical(3))
    validator.validate(canonical(2, kind="blood-pressure", patient=None))


def test_schema_rejects_what_the_docs_rule_out() -> None:
    validator = Draft202012Validator(SCHEMA)
    no_value = {"device": {"id": "d"}, "readings": [{"type": "heart-rate", "time": "2026-01-01"}]}
    assert list(validator.iter_errors(no_value))
    assert list(validator.iter_errors({"readings": []}))
