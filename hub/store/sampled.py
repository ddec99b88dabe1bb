"""Period Observations (SampledData): a message's readings merged with what is stored.

The pipeline hands each reading of a grouped type (a device mapping's ``sampled``) to
``SampledGroups.add`` instead of keeping its own Observation; ``observations`` then returns one
Observation per period touched, holding the stored period's data with the new readings written
over it (hub.normalize.sampled). The store merges, never overwrites: a reading arriving hours
after its period's Observation was stored lands in that Observation's data.

Concurrency: on PostgreSQL two workers may carry readings of one period at once; each takes a
transaction-scoped advisory lock on the period's id before reading the stored version, so the
second waits for the first to commit and merges into its result (READ COMMITTED: the read after
the lock sees the commit). Locks are taken in id order. SQLite has one writer at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from hub.contracts import Measurement
from hub.mappings.layouts import SampledGrouping
from hub.normalize.sampled import (
    Window,
    data_token,
    group_id,
    locate,
    merge_data,
    parse_data,
    period_observation,
)
from hub.store import resources
from hub.store.db import is_postgres

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


@dataclass
class _Period:
    window: Window
    template: dict[str, Any]  # the latest reading's own Observation (codes, subject, lineage)
    readings: dict[int, tuple[datetime, str]] = field(default_factory=dict)  # slot → (time, value)


def _lock_key(rid: str) -> int:
    """A signed 64-bit advisory-lock key from the (UUID) id."""
    return int(rid[:8] + rid[9:13] + rid[14:18], 16) - (1 << 63)


class SampledGroups:
    """The period Observations one message contributes to (see module docstring)."""

    def __init__(self, sampling: Mapping[tuple[str, str], SampledGrouping]) -> None:
        self.sampling = sampling
        self.periods: dict[str, _Period] = {}

    def add(self, m: Measurement, obs: dict[str, Any]) -> bool:
        """Take a reading of a grouped type (True), or leave it to be stored alone (False).

        ``obs`` is the reading's own Observation, already unit-converted and checked: its
        quantity is what goes in the slot."""
        if not self.sampling or m.mapping is None:
            return False
        grouping = self.sampling.get((m.mapping, m.type))
        quantity = obs.get("valueQuantity")
        if grouping is None or quantity is None:
            return False
        window, slot = locate(m.time, grouping)
        subject = (obs.get("subject") or {}).get("reference")
        patient = subject[len("Patient/"):] if isinstance(subject, str) else None
        rid = group_id(m.device.token(), patient, m.type, window)
        period = self.periods.get(rid)
        if period is None:
            period = self.periods[rid] = _Period(window, obs)
        else:
            period.template = obs
        held = period.readings.get(slot)
        if held is None or m.time >= held[0]:  # two in one slot: the later reading wins
            period.readings[slot] = (m.time, data_token(quantity["value"]))
        return True

    def observations(self, conn: Connection) -> list[dict[str, Any]]:
        """One Observation per period touched, merged with its stored version (the stored
        data with this message's readings over it; ``amended`` when that changed the data)."""
        out: list[dict[str, Any]] = []
        postgres = is_postgres(conn.engine)
        for rid in sorted(self.periods):
            period = self.periods[rid]
            if postgres:
                conn.execute(_LOCK, {"key": _lock_key(rid)})
            stored = resources.read(conn, "Observation", rid)
            window = period.window
            new = {slot: token for slot, (_, token) in period.readings.items()}
            sampled = (stored or {}).get("valueSampledData") or {}
            if stored is None or sampled.get("period") != window.every_ms:
                data, _ = merge_data(parse_data(None, window.slots), new)
                status = "final"
            else:
                data, changed = merge_data(parse_data(sampled.get("data"), window.slots), new)
                status = "amended" if changed else str(stored.get("status") or "final")
            out.append(period_observation(period.template, rid, window, data, status))
        self.periods.clear()
        return out
