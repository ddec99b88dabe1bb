"""``hub simulate generate|evaluate``: a synthetic cohort, and how well the rules find its events.

- ``generate OUT`` writes ``OUT/messages.ndjson`` (one inbound message a line: arrival time,
  source, canonical body) and ``OUT/labels.json`` (programs, per-patient overrides and the
  injected events with their onsets: the ground truth).
- ``evaluate [DIR]`` replays a cohort (from DIR, or generated in memory from the same options)
  through a real hub on a fresh SQLite database: hour by hour, the hour's messages enter the
  inbox, the worker drains them through the whole pipeline (mapping, plausibility, store,
  rules), and the scheduler runs at the hour's end on the simulated clock. It then scores the
  Flags and Communications against the labels (hub/rules/evaluation.py) and prints recall
  within 24 h, time to detect and false alerts per stable patient-month (``--json`` for all).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import typer
from sqlalchemy import select

from hub.contracts import Identifier
from hub.fhir.ids import registry_id
from hub.pipeline import Pipeline
from hub.rules import store as rule_store
from hub.rules.cohort import Cohort, Event, Message, Patient, generate
from hub.rules.engine import RulesEngine
from hub.rules.evaluation import Output, as_text, score
from hub.rules.outputs import RULE_TAG_SYSTEM
from hub.runtime import Hub
from hub.settings import Settings
from hub.store import inbox
from hub.store.db import upgrade, write_tx
from hub.store.models import Resource
from hub.telemetry import Telemetry
from hub.worker import drain

app = typer.Typer(no_args_is_help=True, help="Synthetic cohort and rules evaluation")
PATIENT_SYSTEM = "urn:iomt-fhir-hub:patient"


def _options(patients: int, days: int, seed: int, eventful: float) -> Cohort:
    if days < 24:
        raise typer.BadParameter("at least 24 days: events come after the 14-day baselines")
    return generate(patients, days, seed, eventful=eventful)


@app.command("generate")
def generate_cmd(
    out: Path = typer.Argument(..., help="folder to write messages.ndjson and labels.json"),
    patients: int = typer.Option(60, help="patients"),
    days: int = typer.Option(30, help="days of monitoring"),
    seed: int = typer.Option(1, help="random seed (same seed, same cohort)"),
    eventful: float = typer.Option(0.5, help="share of patients with an injected event"),
) -> None:
    """Write a synthetic cohort: inbound messages and ground-truth labels."""
    cohort = _options(patients, days, seed, eventful)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "messages.ndjson").open("wb") as fh:
        for m in cohort.messages:
            fh.write(orjson.dumps({"at": m.at.isoformat(), "source": m.source, "body": m.body})
                     + b"\n")
    (out / "labels.json").write_bytes(orjson.dumps(cohort.labels(), option=orjson.OPT_INDENT_2))
    typer.echo(f"wrote {len(cohort.messages)} messages and {len(cohort.events)} events for "
               f"{len(cohort.patients)} patients to {out}")


def load(folder: Path) -> Cohort:
    """A cohort written by ``generate``."""
    labels = orjson.loads((folder / "labels.json").read_bytes())
    people = []
    for row in labels["patients"]:
        event = row["event"]
        people.append(Patient(row["id"], row["program"], 0, Event(
            row["id"], event["kind"], datetime.fromisoformat(event["onset"]), event["detail"],
            event["detected_by"], datetime.fromisoformat(event["start"])) if event else None,
            row["overrides"]))
    messages = []
    with (folder / "messages.ndjson").open("rb") as fh:
        for line in fh:
            row = orjson.loads(line)
            messages.append(Message(datetime.fromisoformat(row["at"]), row["source"],
                                    row["body"]))
    return Cohort(datetime.fromisoformat(labels["start"]), labels["days"], people, messages)


def _patient_ref(cohort_id: str) -> str:
    return registry_id("Patient", Identifier(PATIENT_SYSTEM, cohort_id))


def run(cohort: Cohort, mappings_dir: Path, progress: bool = True) -> tuple[list[Output], int]:
    """Replay ``cohort`` through a real hub; the Flags/Communications written, and the number
    of readings stored."""
    with tempfile.TemporaryDirectory(prefix="hub-simulate-") as tmp:
        url = f"sqlite:///{tmp}/hub.db"
        upgrade(url)
        settings = Settings(database_url=url, env="test", mappings_dir=mappings_dir,
                            inline_worker=False, sqlite_synchronous="NORMAL")
        hub = Hub.build(settings, Telemetry.disabled())
        began = time.monotonic()

        def report(hour: int) -> None:
            if progress and hour % 168 == 0:
                typer.echo(f"  simulated {hour // 24} days in {time.monotonic() - began:.0f} s",
                           err=True)

        replay(cohort, hub, hub.pipeline, batch=64, after_hour=report)
        outputs, readings = _collect(hub, cohort)
        hub.engine.dispose()
    return outputs, readings


def replay(cohort: Cohort, hub: Hub, pipeline: Pipeline, *, batch: int,
           after_hour: Callable[[int], None] | None = None) -> None:
    """Feed ``cohort`` through ``pipeline`` hour by hour: its patients' overrides first, then
    each hour's messages received and drained (``batch`` per transaction) and the rules'
    scheduler run at the hour's end; ``after_hour(hour)`` after each (progress, checks)."""
    rules = pipeline.rules
    assert isinstance(rules, RulesEngine), "a cohort is replayed with rules on"
    with write_tx(hub.engine) as conn:
        for p in cohort.patients:
            for rule_id, params in p.overrides.items():
                rule_store.put_override(conn, _patient_ref(p.id), rule_id, params, "simulation")
    pending = list(cohort.messages)
    index = 0
    for hour in range(1, cohort.days * 24 + 1):  # the data ends there: later, a silence
        now = cohort.start + timedelta(hours=hour)
        while index < len(pending) and pending[index].at <= now:
            m = pending[index]
            inbox.receive(hub.engine, source=m.source, channel="http",
                          content_type="application/json", body=orjson.dumps(m.body))
            index += 1
        drain(pipeline, hub.engine, batch)
        rules.tick(hub.engine, now, route=pipeline.router.route)
        if after_hour is not None:
            after_hour(hour)


def _collect(hub: Hub, cohort: Cohort) -> tuple[list[Output], int]:
    by_ref = {_patient_ref(p.id): p.id for p in cohort.patients}
    table = Resource.__table__  # type: ignore[attr-defined]
    found: list[Output] = []
    readings = 0
    with hub.engine.connect() as conn:
        for res_type, content in conn.execute(select(table.c.res_type, table.c.content).where(
                table.c.res_type.in_(["Flag", "Communication", "Observation"]))):
            res: dict[str, Any] = orjson.loads(content)
            tags = [t["code"] for t in res.get("meta", {}).get("tag", ())
                    if t.get("system") == RULE_TAG_SYSTEM]
            if res_type == "Observation":
                readings += 0 if tags else 1
                continue
            patient = by_ref.get(res["subject"]["reference"].removeprefix("Patient/"))
            if patient is None or not tags:
                continue
            if res_type == "Flag":
                at = datetime.fromisoformat(res["period"]["start"])
                found.append(Output(patient, "Flag", tags[0], at))
            else:
                to_patient = res["recipient"][0].get("reference", "").startswith("Patient/")
                found.append(Output(patient, "Communication", tags[0],
                                    datetime.fromisoformat(res["sent"]), to_patient))
    return found, readings


@app.command("evaluate")
def evaluate_cmd(
    folder: Path | None = typer.Argument(None, help="a cohort written by 'generate' "
                                                    "(default: generate one in memory)"),
    patients: int = typer.Option(60, help="patients (when generating)"),
    days: int = typer.Option(30, help="days (when generating)"),
    seed: int = typer.Option(1, help="random seed (when generating)"),
    eventful: float = typer.Option(0.5, help="share of patients with an event (generating)"),
    as_json: bool = typer.Option(False, "--json", help="print the full report as JSON"),
) -> None:
    """Replay a cohort through the hub and score recall, time to detect, false alerts."""
    cohort = load(folder) if folder is not None else _options(patients, days, seed, eventful)
    began = time.monotonic()
    outputs, readings = run(cohort, Settings().mappings_dir, progress=not as_json)
    report = score(cohort, outputs, readings)
    if as_json:
        typer.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(as_text(report))
        typer.echo(f"(replayed in {time.monotonic() - began:.0f} s)")
