"""Sync test helpers: seeding resources + outbox rows, destinations files, the loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hub.fhir.ids import stable_id, urn_identifier
from hub.runtime import Hub
from hub.store import outbox, resources
from hub.store.db import write_tx
from hub.store.models import OutboxItem
from hub.sync.config import DestinationsFile, load_destinations
from hub.sync.routing import OutboxRouter
from tests.readings import BASE_TIME
from tests.sync.fhir_server import ServerThread

LOINC = "http://loinc.org"


def observation(patient: int, n: int, *, status: str = "final",
                components: bool = False) -> dict[str, Any]:
    """A synthetic vital-signs Observation (deterministic id per patient and index)."""
    rid = stable_id("test-obs", str(patient), str(n))
    when = (BASE_TIME + timedelta(minutes=n)).isoformat()
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "identifier": [urn_identifier(rid)],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                  "observation-category", "code": "vital-signs"}]}],
        "subject": {"reference": f"Patient/p{patient}"}, "effectiveDateTime": when,
    }
    if components:
        res["code"] = {"coding": [{"system": LOINC, "code": "85354-9"}]}
        res["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
             "valueQuantity": {"value": 120 + n % 20, "unit": "mmHg",
                               "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
             "valueQuantity": {"value": 80, "unit": "mmHg",
                               "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]
    else:
        res["code"] = {"coding": [{"system": LOINC, "code": "8867-4"}]}
        res["valueQuantity"] = {"value": 60 + n % 40, "unit": "/min",
                                "system": "http://unitsofmeasure.org", "code": "/min"}
    return res


def seed(hub: Hub, router: OutboxRouter, patients: int, per_patient: int, *,
         interleave: bool = True, start: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
    """Store Observations and their outbox rows as the pipeline does (one transaction each
    round). Interleaved: reading n of every patient before reading n+1 of any."""
    made: list[dict[str, Any]] = []
    span = range(start, start + per_patient)
    order = ([(p, n) for n in span for p in range(patients)] if interleave
             else [(p, n) for p in range(patients) for n in span])
    for i in range(0, len(order), 500):
        batch = [observation(p, n, **kwargs) for p, n in order[i:i + 500]]
        with write_tx(hub.engine) as conn:
            written = resources.upsert(conn, [dict(r) for r in batch], "msg-test")
            outbox.enqueue(conn, router.route(written))
        made.extend(batch)
    return made


def outbox_rows(hub: Hub) -> list[Any]:
    t = OutboxItem.__table__  # type: ignore[attr-defined]
    with hub.engine.connect() as conn:
        return list(conn.execute(select(t).order_by(t.c.id)))


def write_config(tmp_path: Path, text: str) -> DestinationsFile:
    path = tmp_path / "destinations.yaml"
    path.write_text(text)
    return load_destinations(path)


def fhir_dest(url: str, name: str = "ehr", **limits: Any) -> str:
    lines = "\n".join(f"      {k}: {v}" for k, v in limits.items())
    return (f"destinations:\n  - name: {name}\n    type: fhir\n    base_url: {url}/fhir\n"
            f"    limits:\n      circuit_open_secs: 0.5\n      max_backoff_secs: 0.2\n{lines}\n")


def server_stats(url: str) -> dict[str, Any]:
    out: dict[str, Any] = httpx.get(f"{url}/_admin/stats", timeout=30).json()
    return out


def configure(url: str, **values: Any) -> None:
    httpx.post(f"{url}/_admin/config", json=values, timeout=10).raise_for_status()


@pytest.fixture
def fhir_server() -> Iterator[ServerThread]:
    with ServerThread() as server:
        yield server


def assert_order_per_patient(stats: dict[str, Any], made: list[dict[str, Any]]) -> None:
    """First arrivals per patient follow the hub's order. A re-send (its answer was lost)
    repeats an item already there; it cannot reorder what the destination first saw."""
    rank = {r["identifier"][0]["value"]: i for i, r in enumerate(made)}
    for patient, arrivals in stats["arrivals"].items():
        ranks = [rank[a] for a in dict.fromkeys(arrivals)]
        assert ranks == sorted(ranks), f"order broken for {patient}"
