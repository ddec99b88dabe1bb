"""The rules engine inside the real pipeline, on SQLite and on PostgreSQL: outputs stored with
the readings that caused them, replays change nothing, the scheduler runs on an injected clock
and routes its outputs to the outbox, overrides apply per patient, explain says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select

from hub.pipeline import Pipeline
from hub.rules import store as rule_store
from hub.rules.engine import RulesEngine
from hub.rules.explain import as_text, explain, resolve_patient
from hub.runtime import Hub
from hub.store import inbox
from hub.store.db import write_tx
from hub.store.models import OutboxItem, Resource, RulePatientState, RuleSchedule
from hub.sync.routing import OutboxRouter, Route
from hub.worker import drain
from tests.conftest import REPO

T0 = datetime(2026, 11, 20, 8, tzinfo=UTC)


def post(hub: Hub, readings: list[dict[str, Any]], patient: str = "pat-rules") -> str:
    body = {"device": {"id": "kit-1"}, "patient": {"id": patient}, "readings": readings}
    return inbox.receive(hub.engine, source="hub", channel="http",
                         content_type="application/json", body=orjson.dumps(body)).message_id


def spo2(hours: float, value: float) -> dict[str, Any]:
    return {"type": "oxygen-saturation", "time": (T0 + timedelta(hours=hours)).isoformat(),
            "value": value, "unit": "%"}


def rows(hub: Hub, res_type: str) -> list[dict[str, Any]]:
    with hub.engine.connect() as conn:
        found = conn.execute(select(Resource.content).where(Resource.res_type == res_type))
        return [orjson.loads(r) for r in found.scalars()]


def snapshot(hub: Hub) -> list[tuple[Any, ...]]:
    with hub.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(Resource.res_type, Resource.res_id, Resource.version_id, Resource.content)
            .order_by(Resource.res_type, Resource.res_id))]


def routed(hub: Hub, clock: list[datetime]) -> Pipeline:
    """The hub's pipeline with a destination for Flags and Communications, and a fake clock."""
    rules = RulesEngine(REPO / "mappings" / "rules", clock=lambda: clock[0])
    return Pipeline(connectors=hub.connectors, mappings=hub.mappings, rules=rules,
                    router=OutboxRouter((Route("ehr", frozenset({"Flag", "Communication"})),)))


def test_outputs_commit_with_the_readings_and_go_to_the_outbox(hub: Hub) -> None:
    clock = [T0]
    pipeline = routed(hub, clock)
    post(hub, [spo2(0, 88), spo2(1, 87)])
    drain(pipeline, hub.engine, 10)
    (flag,) = rows(hub, "Flag")
    assert flag["status"] == "active"
    with hub.engine.connect() as conn:
        queued = conn.execute(select(OutboxItem.res_type, OutboxItem.destination)).all()
    # the Flag and the care team's alert; the hub Device (author) is stored but not routed
    assert sorted(queued) == [("Communication", "ehr"), ("Flag", "ehr")]


def test_replaying_a_message_changes_nothing(hub: Hub) -> None:
    message = post(hub, [spo2(0, 88), spo2(1, 87), spo2(2, 86)])
    drain(hub.pipeline, hub.engine, 10)
    before = snapshot(hub)
    with hub.engine.connect() as conn:
        states = conn.execute(select(RulePatientState.patient_id, RulePatientState.states,
                                     RulePatientState.updated_at)).all()
    assert inbox.requeue(hub.engine, status="processed", message_ids=[message]) == 1
    drain(hub.pipeline, hub.engine, 10)
    assert snapshot(hub) == before
    with hub.engine.connect() as conn:
        assert conn.execute(select(RulePatientState.patient_id, RulePatientState.states,
                                   RulePatientState.updated_at)).all() == states


def test_the_scheduler_runs_what_is_due_at_the_injected_time(hub: Hub) -> None:
    clock = [T0]
    pipeline = routed(hub, clock)
    post(hub, [{"type": "body-weight", "time": T0.isoformat(), "value": 80, "unit": "kg"}])
    drain(pipeline, hub.engine, 10)
    pipeline.rules.tick(hub.engine, T0 + timedelta(hours=23), route=pipeline.router.route)
    assert rows(hub, "Communication") == []  # 23 h of silence is not yet 24
    clock[0] = T0 + timedelta(hours=24)
    ran = pipeline.rules.tick(hub.engine, route=pipeline.router.route)  # the clock's now
    assert ran >= 1
    (reminder,) = [c for c in rows(hub, "Communication")
                   if c["recipient"][0]["reference"].startswith("Patient/")]
    assert reminder["category"][0]["coding"][0]["code"] == "reminder"
    assert reminder["sent"] == "2026-11-21T08:00:00Z"
    with hub.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OutboxItem)
                            .where(OutboxItem.res_type == "Communication")).scalar_one() == 1
        due = conn.execute(select(RuleSchedule.rule_id, RuleSchedule.due_at)).all()
    assert ("device-silence" in {r for r, _ in due})  # next: the 72 h Flag
    # ticking again at the same time changes nothing
    before = snapshot(hub)
    pipeline.rules.tick(hub.engine, T0 + timedelta(hours=24), route=pipeline.router.route)
    assert snapshot(hub) == before


def test_an_override_applies_to_one_patient_only(hub: Hub) -> None:
    post(hub, [spo2(0, 89), spo2(1, 89)], patient="strict")
    post(hub, [spo2(0, 89), spo2(1, 89)], patient="copd")
    with hub.engine.connect() as conn:
        copd = resolve_patient(conn, "copd")
    assert copd is None  # not registered until its first message is processed
    drain(hub.pipeline, hub.engine, 10)
    with hub.engine.connect() as conn:
        copd = resolve_patient(conn, "copd")
    assert copd is not None
    assert len(rows(hub, "Flag")) == 2
    with write_tx(hub.engine) as conn:
        rule_store.put_override(conn, copd, "spo2-low", {"any": [
            {"measure": "spo2", "below": 85, "clear_at": 88}]}, "test")
        rule_store.put_override(conn, copd, "device-silence", {"enabled": False}, "test")
    post(hub, [spo2(30, 87), spo2(31, 86)], patient="strict")
    post(hub, [spo2(30, 87), spo2(31, 86)], patient="copd")
    drain(hub.pipeline, hub.engine, 10)
    flags = rows(hub, "Flag")
    strict = [f for f in flags if f["subject"]["reference"] != f"Patient/{copd}"]
    mine = [f for f in flags if f["subject"]["reference"] == f"Patient/{copd}"]
    assert [f["status"] for f in strict] == ["active"]
    assert len(mine) == 1  # its first Flag (raised under the program limit) is still open
    with hub.engine.connect() as conn:
        report = explain(hub.pipeline.rules, conn, copd)  # type: ignore[arg-type]
    entries = {e["rule"]: e for e in report["rules"]}
    assert entries["spo2-low"]["override"]["any"][0]["below"] == 85
    assert entries["device-silence"]["enabled"] is False
    text = as_text(report)
    assert "why: Low oxygen saturation: SpO2 89 %" in text
    assert "Time zone: UTC (the program's)" in text
    # the override as given, then what it changes in the rule (the merged trigger)
    assert '      override: {"any":[{"below":85,"clear_at":88,"measure":"spo2"}]}\n' \
        '      effective: {"any":[{"measure":"spo2","below":85.0,"clear_at":88.0}]}' in text


def test_state_rows_per_patient_are_bounded_by_the_rules(hub: Hub) -> None:
    readings = []
    for day in range(20):
        for hour in (7, 19):
            when = (T0 + timedelta(days=day, hours=hour - 8)).isoformat()
            readings.append({"type": "blood-pressure", "time": when, "unit": "mm[Hg]",
                             "components": {"systolic": 125 + day % 5, "diastolic": 80}})
            readings.append({"type": "heart-rate", "time": when, "value": 70, "unit": "/min"})
    post(hub, readings)
    drain(hub.pipeline, hub.engine, 10)
    with hub.engine.connect() as conn:
        ((text,),) = conn.execute(select(RulePatientState.states)).all()  # one row: one patient
    states = rule_store.unpack(text)
    assert set(states) <= set(hub.pipeline.rules.program.rules)  # type: ignore[attr-defined]
    assert max(len(s) for s in states.values()) < 6000
    with hub.engine.connect() as conn:
        patient = resolve_patient(conn, "pat-rules")
        assert patient is not None
        assert rule_store.next_due(conn, patient)


def test_a_driver_error_in_the_state_store_is_sqlalchemys_without_the_ids(hub: Hub) -> None:
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    if hub.engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL")
    with write_tx(hub.engine) as conn:
        rule_store.save(conn, [("patient-secret-id", rule_store.pack({"spo2-low": "{}"}))])
    with hub.engine.connect() as holder, holder.begin():
        rule_store.load(holder, ["patient-secret-id"])  # FOR UPDATE: holds the row
        with hub.engine.connect() as other, other.begin():
            other.execute(text("SET LOCAL lock_timeout = '100ms'"))
            with pytest.raises(OperationalError) as caught:
                rule_store.load(other, ["patient-secret-id"])
    assert "patient-secret-id" not in str(caught.value)


def test_migration_0007_carries_rule_states_over_and_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alembic import command
    from sqlalchemy import create_engine, text

    from hub.store.db import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0006")
    engine = create_engine(url)
    with engine.begin() as conn:
        for patient, rule, state in [("p1", "spo2-low", '{"t":1.0}'), ("p1", "news2", "{}"),
                                     ("p2", "device-silence", '{"last":2.0}')]:
            conn.execute(text("INSERT INTO rule_state VALUES (:p, :r, :s, '2026-01-01')"),
                         {"p": patient, "r": rule, "s": state})
    upgrade(url)
    with engine.connect() as conn:
        got = {p: rule_store.unpack(s) for p, s in conn.execute(
            text("SELECT patient_id, states FROM rule_patient_state"))}
    assert got == {"p1": {"news2": "{}", "spo2-low": '{"t":1.0}'},
                   "p2": {"device-silence": '{"last":2.0}'}}
    command.downgrade(alembic_config(url), "0006")
    with engine.connect() as conn:
        back = sorted(tuple(r) for r in conn.execute(
            text("SELECT patient_id, rule_id, state FROM rule_state")))
    engine.dispose()
    assert back == [("p1", "news2", "{}"), ("p1", "spo2-low", '{"t":1.0}'),
                    ("p2", "device-silence", '{"last":2.0}')]
