"""Fixtures for the rules tests: the shipped program, the hub's mappings, in-memory sessions,
and R4 validation of every output (fhir.resources R4B)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hub.mappings.catalogue import MappingSet, load_mapping_set
from hub.rules.program import Program, load_program, restrict
from hub.rules.scenarios import Session
from tests.conftest import REPO

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
PROGRAM = load_program(REPO / "mappings" / "rules")
MAPPINGS = load_mapping_set(REPO / "mappings")


def at(minutes: float = 0, *, hours: float = 0, days: float = 0) -> str:
    """An ISO instant relative to T0."""
    return (T0 + timedelta(minutes=minutes, hours=hours, days=days)).isoformat()


def validate(resource: dict[str, Any]) -> Any:
    """Parse ``resource`` as FHIR R4 (raises on anything R4B refuses)."""
    return get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def of(outputs: list[dict[str, Any]], kind: str, rule: str | None = None
       ) -> list[dict[str, Any]]:
    """Outputs of one resource type (and rule, by its meta tag)."""
    found = [r for r in outputs if r["resourceType"] == kind]
    if rule is not None:
        found = [r for r in found if any(t.get("code") == rule
                                         for t in r.get("meta", {}).get("tag", ()))]
    return found


def summary_of(resource: dict[str, Any]) -> str:
    """The ``summary`` of the output's ``urn:iomt-fhir-hub:rule`` extension."""
    for ext in resource.get("extension", ()):
        if ext["url"] == "urn:iomt-fhir-hub:rule":
            for part in ext["extension"]:
                if part["url"] == "summary":
                    return str(part["valueString"])
    return ""


@pytest.fixture(scope="session")
def program() -> Program:
    return PROGRAM


@pytest.fixture(scope="session")
def mappings() -> MappingSet:
    return MAPPINGS


@pytest.fixture
def session() -> Iterator[Callable[..., Session]]:
    """``session(*rule_ids)``: a fresh in-memory session running only those rules."""
    opened: list[Session] = []

    def make(*rule_ids: str, program: Program | None = None) -> Session:
        base = program or PROGRAM
        chosen = restrict(base, list(rule_ids)) if rule_ids else base
        found = Session(chosen, MAPPINGS)
        opened.append(found)
        return found

    yield make
    for found in opened:
        found.close()
