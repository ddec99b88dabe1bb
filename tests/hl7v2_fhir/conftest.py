"""Shared helpers: convert HL7v2 bytes through the real pipeline on a scratch store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hub.contracts import RawMessage
from hub.errors import DataError
from hub.identity import IdentityResolver
from hub.runtime import Hub
from hub.store.db import upgrade, utcnow
from hub.telemetry import Telemetry
from tests.conftest import CORPUS, REPO, make_settings

CORPUS_HL7 = CORPUS / "hl7v2"
EXPECTED_CORPUS = CORPUS / "hl7v2-expected"
FIXTURES = REPO / "fixtures" / "hl7v2"
EXPECTED = REPO / "fixtures" / "expected" / "hl7v2"
ER7 = "x-application/hl7-v2+er7"


@dataclass
class Converted:
    """What one input converted to: resources by type, item errors, or the refusal."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: str | None = None

    def of(self, rtype: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["resourceType"] == rtype]


class Converter:
    """``hub convert`` in-process: the real connector, mappings and normalize; nothing kept."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def __call__(self, body: bytes, mapping: str | None = None) -> Converted:
        raw = RawMessage(str(uuid.uuid4()), "hl7v2", ER7, body, utcnow())
        with self.hub.engine.connect() as conn:
            try:
                out = self.hub.pipeline.convert(conn, raw, IdentityResolver({}))
            except DataError as exc:
                where = f"{exc.location}: " if exc.location else ""
                return Converted(refused=f"{where}{exc.message}")
            finally:
                conn.rollback()
        unique = {(r["resourceType"], r["id"]): r for r in out.resources}
        return Converted(list(unique.values()), out.errors)


@pytest.fixture(scope="session")
def scratch_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    url = f"sqlite:///{tmp_path_factory.mktemp('hl7-convert') / 'scratch.db'}"
    upgrade(url)
    hub = Hub.build(make_settings(url, sqlite_synchronous="NORMAL"), Telemetry.disabled())
    yield hub
    hub.engine.dispose()


@pytest.fixture(scope="session")
def convert(scratch_hub: Hub) -> Converter:
    return Converter(scratch_hub)


def corpus(name: str) -> bytes:
    return (CORPUS_HL7 / name).read_bytes()


def corpus_files() -> list[Path]:
    files = sorted(CORPUS_HL7.glob("*.hl7"))
    if not files:
        raise FileNotFoundError(f"HL7v2 corpus missing at {CORPUS_HL7}")
    return files


def codes(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c.get("system", ""), c["code"]) for c in resource.get("code", {}).get("coding", [])}
