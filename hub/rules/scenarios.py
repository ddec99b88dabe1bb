"""Golden scenarios: a series of readings (and scheduler ticks) → the Flags/Communications due.

A scenario file (``mappings/rules/scenarios/*.scenario.yaml``, validated with file:line errors)
names the rules under test (``rules``; default: the whole program), optional per-patient
``overrides`` and ``timezone`` (the patient's own), and ``steps``. Each step posts canonical
readings (``readings``, or ``series``: ``count`` readings ``every`` apart from ``start``, values
constant or cycled from a list) as one message, then runs the scheduler at ``tick`` (or at each
of ``ticks``), then checks its ``expect`` list; the scenario's own ``expect`` is checked at the end.

The readings go through the real mapping machinery (``mappings/devices/hub.yaml`` and the type
catalogue, with plausibility) and the real rules engine on a private in-memory database, so a
scenario proves what the running hub would write. An expectation matches outputs by resource
type and the given fields (``rule``, ``status``, ``priority``, ``category``, ``to``, ``code``,
``name`` (code.text), ``value``, ``comparator``, ``text`` — a substring of the payload or
note); exactly ``count`` (default 1) must match. With ``strict`` (default) every Flag and
Communication written must be matched by some expectation: a scenario also proves what is *not*
said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from hub.contracts import Identifier
from hub.errors import MappingError
from hub.fhir.ids import registry_id
from hub.mappings.catalogue import MappingSet
from hub.mappings.yamlfile import load_model
from hub.normalize.observation import Lineage, build_observation
from hub.rules import store
from hub.rules.engine import RulesEngine
from hub.rules.model import Duration, TimeZone
from hub.rules.outputs import FLAG_PRIORITY, FLAG_PRIORITY_CODES, RULE_TAG_SYSTEM
from hub.rules.program import Program, restrict
from hub.store import resources
from hub.store.db import make_engine, write_tx
from hub.store.models import Resource

PATIENT_SYSTEM = "urn:iomt-fhir-hub:patient"
DEVICE = {"system": "urn:iomt-fhir-hub:device", "id": "scenario-device"}
PRIORITY_WORD = {code: word for word, (code, _) in FLAG_PRIORITY_CODES.items()}
STRICT_TYPES = ("Flag", "Communication")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone offset (e.g. 2026-11-20T08:00:00Z)")
    return value


class Series(_Strict):
    """``count`` readings of ``type`` every ``every`` from ``start``."""

    type: str
    start: datetime
    every: Duration
    count: int = Field(ge=1, le=100_000)
    unit: str | None = None
    value: float | list[float] | None = None
    components: dict[str, float | list[float]] | None = None

    _t = field_validator("start")(_aware)


class Expect(_Strict):
    resourceType: Literal["Flag", "Communication", "Observation", "MedicationAdministration"]
    rule: str | None = None
    count: int = Field(1, ge=0)
    status: str | None = None
    priority: str | None = None
    category: str | None = None
    to: Literal["patient", "care-team"] | None = None
    code: str | None = None
    name: str | None = Field(None, description="Observation code.text")
    value: float | None = None
    comparator: str | None = None
    text: str | None = None


class Step(_Strict):
    readings: list[dict[str, Any]] = Field(default_factory=list)
    series: list[Series] = Field(default_factory=list)
    tick: datetime | None = None
    ticks: list[datetime] = Field(default_factory=list)
    expect: list[Expect] = Field(default_factory=list)

    _t = field_validator("tick")(lambda v: v if v is None else _aware(v))


class Scenario(_Strict):
    version: int = Field(ge=1)
    name: str
    description: str | None = None
    patient: str = "scenario-patient"
    timezone: TimeZone | None = Field(None, description="the patient's own time zone")
    rules: list[str] | None = None
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    strict: bool = True
    steps: list[Step] = Field(min_length=1)
    expect: list[Expect] = Field(default_factory=list)


@dataclass
class Result:
    file: Path
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def scenario_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(path.rglob("*.scenario.yaml"))


def _cycle(value: float | list[float], index: int) -> float:
    return float(value[index % len(value)] if isinstance(value, list) else value)


def plain(node: Any) -> Any:
    """YAML scalars (ruamel's float/int/str subclasses) → built-ins, for JSON encoding."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return str(node) if isinstance(node, str) else node


def expand(series: Series) -> list[dict[str, Any]]:
    """The canonical readings a series stands for."""
    out: list[dict[str, Any]] = []
    for i in range(series.count):
        reading: dict[str, Any] = {"type": series.type,
                                   "time": (series.start + timedelta(seconds=series.every * i))
                                   .isoformat()}
        if series.unit:
            reading["unit"] = series.unit
        if series.components:
            reading["components"] = {k: _cycle(v, i) for k, v in series.components.items()}
        elif series.value is not None:
            reading["value"] = _cycle(series.value, i)
        out.append(reading)
    return out


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """The fields expectations compare, flattened from one output resource."""
    tags = (res.get("meta") or {}).get("tag") or []
    rule = next((t["code"] for t in tags if t.get("system") == RULE_TAG_SYSTEM), None)
    out: dict[str, Any] = {"resourceType": res["resourceType"], "rule": rule,
                           "status": res.get("status"), "id": res.get("id")}
    kind = res["resourceType"]
    if kind == "Flag":
        for ext in res.get("extension", ()):
            if ext["url"] == FLAG_PRIORITY:
                out["priority"] = PRIORITY_WORD[ext["valueCodeableConcept"]["coding"][0]["code"]]
        out["category"] = res["category"][0]["coding"][0]["code"]
        out["text"] = next((e.get("valueString", "") for ext in res.get("extension", ())
                            for e in ext.get("extension", ()) if e.get("url") == "summary"), "")
    elif kind == "Communication":
        out["category"] = res["category"][0]["coding"][0]["code"]
        out["priority"] = res.get("priority")
        ref = res["recipient"][0].get("reference", "")
        out["to"] = "patient" if ref.startswith("Patient/") else "care-team"
        out["text"] = res["payload"][0]["contentString"]
    elif kind == "Observation":
        out["code"] = res["code"]["coding"][0]["code"]
        out["name"] = res["code"].get("text")
        quantity = res.get("valueQuantity") or {}
        out["value"] = quantity.get("value")
        out["comparator"] = quantity.get("comparator")
        out["text"] = " ".join(n.get("text", "") for n in res.get("note", ()))
    return out


def _matches(expect: Expect, summary: dict[str, Any]) -> bool:
    if summary["resourceType"] != expect.resourceType:
        return False
    for key in ("rule", "status", "priority", "category", "to", "code", "name", "comparator"):
        wanted = getattr(expect, key)
        if wanted is not None and summary.get(key) != wanted:
            return False
    if expect.value is not None and summary.get("value") != expect.value:
        return False
    return expect.text is None or expect.text in str(summary.get("text", ""))


def _describe(expect: Expect) -> str:
    given = {k: v for k, v in expect.model_dump(exclude_none=True).items()
             if k not in ("resourceType", "count")}
    return f"{expect.resourceType}({', '.join(f'{k}={v}' for k, v in given.items())})"


def check(expects: list[Expect], outputs: list[dict[str, Any]], strict: bool) -> list[str]:
    """Problems with ``outputs`` against ``expects`` (empty: all good)."""
    summaries = [summarize(r) for r in outputs]
    problems: list[str] = []
    matched: set[str] = set()
    for expect in expects:
        found = [s for s in summaries if _matches(expect, s)]
        matched.update(s["id"] for s in found)
        if len(found) != expect.count:
            problems.append(f"expected {expect.count} {_describe(expect)}, found {len(found)}")
    if strict:
        for s in summaries:
            if s["resourceType"] in STRICT_TYPES and s["id"] not in matched:
                shown = {k: s.get(k) for k in ("rule", "status", "priority", "category", "to")
                         if s.get(k) is not None}
                problems.append(f"unexpected {s['resourceType']} {shown}: "
                                f"{str(s.get('text', ''))[:160]}")
    return problems


def _outputs(db: Engine) -> list[dict[str, Any]]:
    table = Resource.__table__  # type: ignore[attr-defined]
    with db.connect() as conn:
        rows = conn.execute(select(table.c.content).where(
            table.c.res_type.in_(["Flag", "Communication", "Observation",
                                  "MedicationAdministration"]))).scalars().all()
    found = [orjson.loads(r) for r in rows]
    return [r for r in found if any(t.get("system") == RULE_TAG_SYSTEM
                                    for t in (r.get("meta") or {}).get("tag", ()))]


class Session:
    """Readings in, rules out, on a private in-memory database (scenarios, tests, tools)."""

    def __init__(self, program: Program, mappings: MappingSet, *,
                 patient: str = "scenario-patient") -> None:
        self.mappings = mappings
        self.patient_value = patient
        self.patient = registry_id("Patient", Identifier(PATIENT_SYSTEM, patient))
        self.db = make_engine("sqlite://")
        SQLModel.metadata.create_all(self.db)
        self.rules = RulesEngine(program=program)

    def observations(self, readings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Canonical readings → the Observations the hub would store (mapping, plausibility)."""
        body = {"device": DEVICE, "patient": {"id": self.patient_value}, "readings": readings}
        extraction = self.mappings.extract("hub", body)
        if extraction.errors:
            raise MappingError("; ".join(e.message for e in extraction.errors[:5]))
        lineage = Lineage("scenario", "hub")
        return [build_observation(m, self.mappings.types[m.type], patient_id=self.patient,
                                  device_id=registry_id("Device", m.device), lineage=lineage)
                for m in extraction.measurements]

    def override(self, rule_id: str, params: dict[str, Any]) -> None:
        """As ``PUT /rules/overrides``: stored, and a time-based rule runs at the next tick."""
        with write_tx(self.db) as conn:
            store.put_override(conn, self.patient, rule_id, params, "session")
            if rule_id in self.rules.program.time_based:
                self.rules.schedule_now(conn, self.patient, rule_id, at=0.0)

    def settings(self, params: dict[str, Any]) -> None:
        """As ``PUT /rules/patients/{id}/settings`` (e.g. the patient's time zone)."""
        with write_tx(self.db) as conn:
            store.put_override(conn, self.patient, store.SETTINGS, params, "session")
            for rule_id in self.rules.program.time_based:
                self.rules.schedule_now(conn, self.patient, rule_id, at=0.0)

    def post(self, readings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One message: store the readings' Observations, evaluate, store the outputs."""
        return self.evaluate(self.observations(readings))

    def evaluate(self, observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One message of ready-made Observations."""
        with write_tx(self.db) as conn:
            resources.upsert(conn, observations, "scenario")
            derived = self.rules.evaluate(conn, observations)
            resources.upsert(conn, [dict(r) for r in derived], "scenario")
        return derived

    def tick(self, moment: datetime) -> int:
        return self.rules.tick(self.db, moment)

    def outputs(self) -> list[dict[str, Any]]:
        return _outputs(self.db)

    def close(self) -> None:
        self.db.dispose()


class Runner:
    """Runs scenario files against a program and the hub's mappings."""

    def __init__(self, program: Program, mappings: MappingSet) -> None:
        self.program = program
        self.mappings = mappings

    def run(self, path: Path) -> Result:
        try:
            spec = load_model(path, Scenario)
        except MappingError as exc:
            return Result(path, path.name, [str(p) for p in exc.problems] or [exc.message])
        result = Result(path, spec.name)
        try:
            program = restrict(self.program, spec.rules) if spec.rules else self.program
        except ValueError as exc:
            result.problems.append(str(exc))
            return result
        session = Session(program, self.mappings, patient=spec.patient)
        try:
            if spec.timezone:
                session.settings({"timezone": spec.timezone})
            for rule_id, params in spec.overrides.items():
                session.override(rule_id, plain(params))
            for index, step in enumerate(spec.steps):
                readings = [plain(r) for r in step.readings]
                for series in step.series:
                    readings.extend(expand(series))
                if readings:
                    session.post(readings)
                for moment in ([step.tick] if step.tick else []) + list(step.ticks):
                    session.tick(moment)
                if step.expect:
                    result.problems += [f"step {index + 1}: {p}" for p in
                                        check(step.expect, session.outputs(), strict=False)]
            result.problems += check(spec.expect, session.outputs(), spec.strict)
        except MappingError as exc:
            result.problems.append(f"readings refused: {exc.message}")
        finally:
            session.close()
        return result
