"""The rules stage: newly stored Observations in, Flags/Communications out (to the outbox).

The pipeline calls ``RulesStage.evaluate`` inside the message's transaction, after the
Observations are stored, so rule state (``rule_state`` table) and outputs commit atomically with
the readings that caused them. Rules must do constant work per reading (rolling state, no
history scans). The worker calls ``tick`` every few seconds for time-based rules (missed doses,
silence, daily summaries); its outputs are stored and routed to the outbox by ``route``.

The engine that reads ``mappings/rules/`` is ``hub.rules.engine.RulesEngine``; the language is
``hub.rules.model``; docs/rules.md describes both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine

from hub.store.resources import Written


@dataclass(frozen=True, slots=True)
class RuleInput:
    """What the rules read of some Observations (``RulesStage.read``), made without the
    database: the pipeline's prepare phase makes it, possibly in another process (picklable).
    ``program`` names the rules that read it."""

    program: str
    samples: Any


class RulesStage(Protocol):
    """Evaluate rules over Observations just written; return resources to store and deliver."""

    def evaluate(
        self, conn: Connection, observations: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        ...

    def read(self, observations: list[dict[str, Any]]) -> RuleInput:
        """The part of ``evaluate`` that needs no database."""
        ...

    def evaluate_read(self, conn: Connection, read: RuleInput) -> list[dict[str, Any]] | None:
        """``evaluate`` of what ``read`` gave; None if other rules read it (edited since):
        then ``evaluate`` the Observations instead."""
        ...

    def evaluate_reads(self, conn: Connection, reads: list[RuleInput | None]
                       ) -> list[list[dict[str, Any]]] | None:
        """``evaluate_read`` of several messages (None: no Observations), in order, as if one
        after the other; None if any was read by other rules (then one by one)."""
        ...

    def tick(self, db: Engine, now: datetime | None = None,
             route: Callable[[list[Written]], list[tuple[str, Written]]] | None = None
             ) -> int:
        """Run the time-based rules due at ``now``; returns how many (patient, rule) ran."""
        ...

    def refresh(self) -> bool:
        """Reload edited rule files (a broken edit is refused); True if new rules are live."""
        ...


class NoRules:
    """The stage when no rules are configured: produces nothing."""

    def evaluate(
        self, conn: Connection, observations: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return []

    def read(self, observations: list[dict[str, Any]]) -> RuleInput:
        return RuleInput("", None)

    def evaluate_read(self, conn: Connection, read: RuleInput) -> list[dict[str, Any]] | None:
        return []

    def evaluate_reads(self, conn: Connection, reads: list[RuleInput | None]
                       ) -> list[list[dict[str, Any]]] | None:
        return [[] for _ in reads]

    def tick(self, db: Engine, now: datetime | None = None,
             route: Callable[[list[Written]], list[tuple[str, Written]]] | None = None
             ) -> int:
        return 0

    def refresh(self) -> bool:
        return False
