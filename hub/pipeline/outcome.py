"""What processing one message produced, and the identity resolver ``convert`` works with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from sqlalchemy.engine import Connection

from hub.contracts import Identifier, Measurement, PatientMerge
from hub.errors import DataError


@dataclass
class Outcome:
    """What processing one message produced."""

    status: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # stored, but held for review
    merges: list[PatientMerge] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)  # conditional creates' stored matches
    # Identity keys (type, system, value) whose registration or assignment may place the
    # readings that could not be: what the message waits for if quarantined.
    waits: set[tuple[str, str, str]] = field(default_factory=set)

    @property
    def error_text(self) -> str | None:
        return summary(self.errors)

    @property
    def notes_text(self) -> str | None:
        return summary(self.warnings)


def summary(lines: list[str]) -> str | None:
    if not lines:
        return None
    shown = lines[:20]
    more = len(lines) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


def describe(error: DataError) -> str:
    return f"{error.location}: {error.message}" if error.location else error.message


class Resolver(Protocol):
    """Identity as ``convert`` uses it: ``IdentityResolver`` (writes the registry as it goes) or
    ``StagedResolver`` (prepare: writes nothing)."""

    def begin_message(self, source: str) -> None: ...

    def device(self, conn: Connection, ident: Identifier) -> str: ...

    def patient(self, conn: Connection, m: Measurement, device_id: str) -> str: ...

    def adopt(self, conn: Connection, given: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def bind_stated(self, conn: Connection, stated: list[dict[str, Any]]) -> list[str]: ...

    def take_new(self) -> list[dict[str, Any]]: ...



def refs_json(resources: list[dict[str, Any]], before: list[str] | None = None) -> str | None:
    """A message's lineage as ``inbox.finish`` stores it: the JSON list of its references
    (made in prepare, so the committer only passes it on)."""
    refs = (before or []) + [f"{r['resourceType']}/{r['id']}" for r in resources]
    return orjson.dumps(refs).decode() if refs else None
