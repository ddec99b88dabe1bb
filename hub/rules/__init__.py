"""The rules stage: newly stored Observations in, Flags/Communications out (to the outbox).

The pipeline calls ``RulesStage.evaluate`` inside the message's transaction, after the
Observations are stored, so rule state (``rule_state`` table) and outputs commit atomically with
the readings that caused them. Rules must do constant work per reading (rolling state, no
history scans). The engine that reads ``mappings/rules/`` plugs in here.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.engine import Connection


class RulesStage(Protocol):
    """Evaluate rules over Observations just written; return resources to store and deliver."""

    def evaluate(
        self, conn: Connection, observations: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        ...


class NoRules:
    """The stage when no rules are configured: produces nothing."""

    def evaluate(
        self, conn: Connection, observations: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return []
