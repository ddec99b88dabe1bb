"""Which destinations want which resources: decides the outbox rows written with a resource."""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.store.resources import Written


@dataclass(frozen=True)
class Route:
    """A destination and the resource types it takes (empty = every type)."""

    destination: str
    resource_types: frozenset[str] = field(default_factory=frozenset)

    def wants(self, written: Written) -> bool:
        return not self.resource_types or written.res_type in self.resource_types


@dataclass(frozen=True)
class OutboxRouter:
    """Routes written resources to destinations; with no routes nothing is queued."""

    routes: tuple[Route, ...] = ()

    def route(self, written: list[Written]) -> list[tuple[str, Written]]:
        return [(r.destination, w) for w in written for r in self.routes if r.wants(w)]
