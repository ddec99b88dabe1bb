"""Two PostgreSQL workers evaluating a brand-new patient's first messages at the same time: the
second waits for the first and builds on its state (no insert-insert race losing one of them).

Real server, two connections, two transactions: worker A evaluates the first low SpO2 reading
of a patient the database has never seen and keeps its transaction open; worker B evaluates
the second reading meanwhile. Without a row to lock, both used to start from an empty state
and the later commit overwrote the earlier: the two consecutive low readings never met and
the Flag was never raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from hub.rules import store
from hub.rules.engine import RulesEngine
from hub.rules.program import restrict
from hub.store.db import make_engine
from tests.conftest import _truncate

from .conftest import PROGRAM, T0

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    _truncate(engine)
    yield engine
    engine.dispose()


def spo2(oid: str, patient: str, hours: float, value: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": (T0 + timedelta(hours=hours)).isoformat(),
            "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org",
                              "code": "%"}}


def waiting_on_a_lock(engine: Engine) -> int:
    """Backends of this database (other than the asker) waiting for a lock."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")).scalar_one())


def run_in_thread(engine: Engine, rules: RulesEngine, observations: list[dict[str, Any]]
                  ) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            with engine.connect() as conn, conn.begin():
                result["out"] = rules.evaluate(conn, observations)
        except Exception as exc:  # reported by the test, not lost in the thread
            result["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    return thread, result


def test_a_new_patients_first_messages_on_two_workers_keep_both_states(pg: Engine) -> None:
    rules = RulesEngine(program=restrict(PROGRAM, ["spo2-low"]))
    worker_a = pg.connect()
    tx_a = worker_a.begin()
    assert rules.evaluate(worker_a, [spo2("o-1", "brand-new", 0, 88)]) == []  # 1 of 2 low
    thread, result = run_in_thread(pg, rules, [spo2("o-2", "brand-new", 1, 87)])
    deadline = time.monotonic() + 10
    while waiting_on_a_lock(pg) == 0 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert thread.is_alive(), "worker B must wait for A's transaction on the new patient"
    tx_a.commit()
    worker_a.close()
    thread.join(10)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    # B read A's committed state: its reading is the second low one in a row
    flags = [r for r in result["out"] if r["resourceType"] == "Flag"]
    assert [f["status"] for f in flags] == ["active"]
    with pg.connect() as conn:
        state = store.states_of(conn, "brand-new")["spo2-low"]
    assert '"n":2' in state


def test_two_new_patients_on_two_workers_do_not_wait_for_each_other(pg: Engine) -> None:
    rules = RulesEngine(program=restrict(PROGRAM, ["spo2-low"]))
    worker_a = pg.connect()
    tx_a = worker_a.begin()
    rules.evaluate(worker_a, [spo2("o-1", "new-a", 0, 88)])
    thread, result = run_in_thread(pg, rules, [spo2("o-2", "new-b", 0, 88)])
    thread.join(10)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    tx_a.commit()
    worker_a.close()
    with pg.connect() as conn:
        assert set(store.states_of(conn, "new-a")) == set(store.states_of(conn, "new-b")) \
            == {"spo2-low"}
