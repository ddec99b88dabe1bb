"""Builders of canonical readings for tests (synthetic; no real patient data)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

BASE_TIME = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def canonical(
    n: int = 3, *, device: str = "cuff-1", patient: str | None = "pat-1", start: int = 0,
    kind: str = "heart-rate",
) -> dict[str, Any]:
    """``n`` readings of one device, one minute apart starting ``start`` minutes after BASE."""
    readings: list[dict[str, Any]] = []
    for i in range(start, start + n):
        when = (BASE_TIME + timedelta(minutes=i)).isoformat()
        if kind == "blood-pressure":
            readings.append({"type": kind, "time": when, "unit": "mm[Hg]",
                             "components": {"systolic": 120 + i % 20, "diastolic": 80}})
        else:
            readings.append({"type": "heart-rate", "time": when, "unit": "/min",
                             "value": 60 + i % 40})
    body: dict[str, Any] = {"device": {"id": device}, "readings": readings}
    if patient is not None:
        body["patient"] = {"id": patient}
    return body
