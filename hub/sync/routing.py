"""Which destinations want which resources: decides the outbox rows written with a resource.

A route filters on resource type, category code and program (a ``meta.tag`` of system
:data:`PROGRAM_SYSTEM`). The pipeline hands :meth:`OutboxRouter.route` only what was written
(type and id), so at enqueue time a route can always apply its type filter; category and program
are applied there too when the caller passes the resources, and otherwise by the sync worker when
it loads the content to send (an unwanted row ends ``skipped``, never sent). Either way a
destination receives exactly what its route selects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hub.contracts import RawMessage
from hub.store.resources import Written
from hub.sync.config import DestinationsFile, Hl7v2AckDestination
from hub.sync.replies import AckRoute, owed_acks

PROGRAM_SYSTEM = "urn:iomt-fhir-hub:program"


def categories_of(resource: Mapping[str, Any]) -> set[str]:
    """Every category code of a resource (Observation/Flag/Communication all use ``category``)."""
    raw = resource.get("category")
    concepts = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    return {c["code"] for concept in concepts if isinstance(concept, dict)
            for c in concept.get("coding") or [] if isinstance(c, dict) and c.get("code")}


def programs_of(resource: Mapping[str, Any]) -> set[str]:
    tags = (resource.get("meta") or {}).get("tag") or []
    return {t["code"] for t in tags
            if isinstance(t, dict) and t.get("system") == PROGRAM_SYSTEM and t.get("code")}


@dataclass(frozen=True)
class Route:
    """A destination and what it takes; an empty set means "any"."""

    destination: str
    resource_types: frozenset[str] = field(default_factory=frozenset)
    categories: frozenset[str] = field(default_factory=frozenset)
    programs: frozenset[str] = field(default_factory=frozenset)

    def wants(self, written: Written) -> bool:
        """The type filter: all that can be decided from a written row alone."""
        return not self.resource_types or written.res_type in self.resource_types

    def wants_content(self, resource: Mapping[str, Any]) -> bool:
        """The full filter, on the resource itself."""
        if self.resource_types and resource.get("resourceType") not in self.resource_types:
            return False
        if self.categories and not (self.categories & categories_of(resource)):
            return False
        return not self.programs or bool(self.programs & programs_of(resource))

    def why_not(self, resource: Mapping[str, Any]) -> str | None:
        """Why the route refuses ``resource`` (for the lineage), or None if it wants it."""
        if self.resource_types and resource.get("resourceType") not in self.resource_types:
            return "not routed: resource type"
        if self.categories and not (self.categories & categories_of(resource)):
            return "not routed: category"
        if self.programs and not (self.programs & programs_of(resource)):
            return "not routed: program"
        return None


@dataclass(frozen=True)
class OutboxRouter:
    """Routes written resources to destinations; with no routes nothing is queued."""

    routes: tuple[Route, ...] = ()
    acks: tuple[AckRoute, ...] = ()  # hl7v2-ack destinations (``hub.sync.replies``)

    @classmethod
    def from_config(cls, config: DestinationsFile) -> OutboxRouter:
        return cls(
            tuple(Route(d.name, frozenset(d.route.resource_types), frozenset(d.route.categories),
                        frozenset(d.route.programs))
                  for d in config.enabled if not isinstance(d, Hl7v2AckDestination)),
            tuple(AckRoute(d.name, d.match)
                  for d in config.enabled if isinstance(d, Hl7v2AckDestination)))

    def route(
        self, written: list[Written],
        resources: Iterable[Mapping[str, Any]] | None = None,
    ) -> list[tuple[str, Written]]:
        """(destination, written) pairs to enqueue.

        With ``resources`` (the written resources' content) the category and program filters
        apply here; without, they apply at delivery (see the module docstring).
        """
        if not self.routes or not written:
            return []
        content: dict[tuple[str, str], Mapping[str, Any]] = {}
        if resources is not None:
            content = {(r.get("resourceType", ""), r.get("id", "")): r for r in resources}
        out: list[tuple[str, Written]] = []
        for w in written:
            res = content.get((w.res_type, w.res_id))
            for r in self.routes:
                if r.wants(w) and (res is None or r.wants_content(res)):
                    out.append((r.destination, w))
        return out

    def replies(self, raw: RawMessage, status: str) -> list[tuple[str, Written]]:
        """Outbox rows owed to the sender of ``raw`` now that it ended ``status`` (HL7v2
        deferred application ACKs); none unless an ``hl7v2-ack`` destination is configured."""
        return owed_acks(self.acks, raw, status) if self.acks else []

    def get(self, destination: str) -> Route | None:
        return next((r for r in self.routes if r.destination == destination), None)
