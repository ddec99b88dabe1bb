"""The rules engine: the pipeline's ``RulesStage`` (per message) and the scheduler (``tick``).

``evaluate`` runs inside the message's transaction after its Observations are stored: samples
are grouped per patient, the patients' state rows and overrides are read in one query, every
rule reading a sample's measures updates its state (constant work per reading: only those
rules' states are decoded), and each touched rule flushes once. A patient whose states changed
is written back as one row; a time-based rule
whose next due time moved *earlier* is (re)scheduled — a later due time is left to the
scheduler, which finds nothing to do at the old time and reschedules, so a stream of readings
does not rewrite the schedule per message.

``tick`` runs the due (patient, rule) pairs at ``now`` (the injectable clock): missed doses,
silence, daily summaries, resolving Flags that have been clear long enough. Its outputs are
stored and queued to the outbox in the same transaction as the new states.

Every output time is an event time (reading time or due time), so re-running a message or a
tick gives byte-identical resources: nothing new is stored and nothing is delivered twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import Connection, Engine

from hub.errors import MappingError
from hub.rules import store
from hub.rules.kinds import KINDS
from hub.rules.kinds.base import Kind
from hub.rules.lifecycle import Ctx
from hub.rules.outputs import hub_device
from hub.rules.program import Program, empty_program, fingerprint, load_program
from hub.rules.readings import samples_by_patient
from hub.store import outbox, resources
from hub.store.db import utcnow, write_tx
from hub.store.resources import Written

log = logging.getLogger("hub.rules")
Route = Callable[[list[Written]], list[tuple[str, Written]]]
Clock = Callable[[], datetime]
ANNOUNCED = frozenset({"Flag", "Communication"})


def _blank(st: dict[str, Any]) -> bool:
    """A state that holds nothing (a scheduled check of a rule the patient has no data for)."""
    alert = st.get("alert")
    return st.keys() <= {"_due", "alert"} and (
        alert is None or (alert["flag"] is None and not alert["sent"] and not alert["episodes"]))


@dataclass(slots=True)
class _Open:
    """One (patient, rule) being evaluated: its context, state, kind and stored text."""

    ctx: Ctx
    st: dict[str, Any]
    kind: Kind
    stored: str | None


class RulesEngine:
    """Rules from ``folder`` (``mappings/rules``) or a given ``program``; ``clock`` is the
    scheduler's notion of now (tests and the simulator inject theirs)."""

    def __init__(self, folder: Path | None = None, *, program: Program | None = None,
                 clock: Clock = utcnow) -> None:
        self.folder = folder
        self.clock = clock
        if program is None:
            program = load_program(folder) if folder is not None and folder.is_dir() \
                else empty_program()
        self.program = program
        self.last_error: MappingError | None = None
        self._rules_for: dict[tuple[str, ...], tuple[str, ...]] = {}

    # ------------------------------------------------------------------ program

    def refresh(self) -> bool:
        """Reload edited rule files; a broken edit is logged and refused (the old rules run)."""
        if self.folder is None or fingerprint(self.folder) == self.program.fingerprint:
            return False
        try:
            candidate = load_program(self.folder)
        except MappingError as exc:
            if self.last_error is None or self.last_error.message != exc.message:
                log.error("rules edit refused; previous rules stay live:\n%s", exc.message)
            self.last_error = exc
            return False
        self.program, self.last_error, self._rules_for = candidate, None, {}
        log.info("rules reloaded (%d rules)", len(candidate.rules))
        return True

    def _rules_of(self, measures: tuple[str, ...]) -> tuple[str, ...]:
        found = self._rules_for.get(measures)
        if found is None:
            index = self.program.by_measure
            ids: dict[str, None] = dict.fromkeys(index.get("*", ()))
            for name in measures:
                ids.update(dict.fromkeys(index.get(name, ())))
            found = self._rules_for[measures] = tuple(ids)
        return found

    def _zone(self, patient: str, overrides: dict[store.Key, str]) -> str | None:
        """The patient's own time zone (their settings), if set."""
        if not overrides:
            return None
        return self.program.patient_zone(overrides.get((patient, store.SETTINGS)))

    def _open(self, patient: str, rule_id: str, states: dict[str, str],
              overrides: dict[store.Key, str], zone: str | None) -> _Open | None:
        program = self.program
        try:
            eff = program.effective(rule_id, overrides.get((patient, rule_id)), zone)
        except ValueError as exc:
            # An override that no longer fits an edited rule: run the program's rule, say why.
            log.warning("override of rule %s ignored for a patient: %s", rule_id, exc)
            eff = program.effective(rule_id, None, zone)
        rule = eff.rule
        if not rule.enabled:
            return None
        stored = states.get(rule_id)
        st = orjson.loads(stored) if stored else {}
        ctx = Ctx(patient, rule, program.versions[rule_id], program.care_team,
                  program.measures, eff.tz)
        return _Open(ctx, st, KINDS[rule.kind], stored)

    # ------------------------------------------------------------------ per message

    def evaluate(self, conn: Connection, observations: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
        """The RulesStage: new Observations in, resources to store and deliver out."""
        grouped = samples_by_patient(observations, self.program)
        if not grouped:
            return []
        loaded = store.load(conn, list(grouped))
        out: list[dict[str, Any]] = []
        saves: list[tuple[str, str]] = []
        schedules: list[tuple[str, str, float | None]] = []
        for patient, samples in grouped.items():
            states = loaded.states.get(patient)
            if states is None:
                states = {}
            zone = self._zone(patient, loaded.overrides)
            opened: dict[str, _Open | None] = {}
            for sample in samples:
                for rule_id in self._rules_of(tuple(sample.values)):
                    if rule_id in opened:
                        entry = opened[rule_id]
                    else:
                        entry = opened[rule_id] = self._open(patient, rule_id, states,
                                                             loaded.overrides, zone)
                    if entry is not None:
                        entry.kind.on_sample(entry.ctx, entry.st, sample)
            changed = False
            for rule_id, entry in opened.items():
                if entry is None:
                    continue
                entry.kind.flush(entry.ctx, entry.st)
                due = entry.kind.due(entry.ctx, entry.st)
                scheduled = entry.st.get("_due")
                if due is not None and (scheduled is None or due < scheduled):
                    entry.st["_due"] = due
                    schedules.append((patient, rule_id, due))
                changed = self._keep(entry, rule_id, states) or changed
                if entry.ctx.out:
                    out.extend(entry.ctx.out)
            if changed:
                saves.append((patient, store.pack(states)))
        store.save(conn, saves)
        store.schedule(conn, schedules)
        return self._with_author(out)

    @staticmethod
    def _keep(entry: _Open, rule_id: str, states: dict[str, str]) -> bool:
        """Put the rule's state back into the patient's states; True if it changed."""
        text = orjson.dumps(entry.st).decode()
        if text == entry.stored:
            return False
        states[rule_id] = text
        return True

    @staticmethod
    def _with_author(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The author/sender Device, stored once (an unchanged upsert writes and sends nothing).
        if any(r["resourceType"] in ANNOUNCED or r.get("device") for r in out):
            return [hub_device(), *out]
        return out

    # ------------------------------------------------------------------ scheduled

    def tick(self, db: Engine, now: datetime | None = None, route: Route | None = None,
             *, limit: int = 500) -> int:
        """Run every (patient, rule) due at ``now`` (default: the clock); returns how many."""
        moment = now or self.clock()
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        now_t = moment.timestamp()
        total = 0
        while True:
            with write_tx(db) as conn:
                due = store.due(conn, moment, limit)
                if due:
                    written = self._run_due(conn, due, now_t)
                    if route is not None and written:
                        outbox.enqueue(conn, route(written))
            total += len(due)
            if len(due) < limit:
                return total

    def _run_due(self, conn: Connection, due: list[store.Key], now_t: float) -> list[Written]:
        loaded = store.load(conn, sorted({p for p, _ in due}))
        out: list[dict[str, Any]] = []
        schedules: list[tuple[str, str, float | None]] = []
        changed: set[str] = set()
        for patient, rule_id in due:
            states = loaded.states.setdefault(patient, {})
            entry = None
            if rule_id in self.program.rules:
                entry = self._open(patient, rule_id, states, loaded.overrides,
                                   self._zone(patient, loaded.overrides))
            if entry is None:  # rule removed or disabled for this patient
                schedules.append((patient, rule_id, None))
                continue
            entry.kind.on_tick(entry.ctx, entry.st, now_t)
            nxt = entry.kind.due(entry.ctx, entry.st)
            if nxt is not None and nxt <= now_t:
                nxt = now_t + 1.0  # never due again within this tick
            entry.st["_due"] = nxt
            schedules.append((patient, rule_id, nxt))
            if not entry.stored and nxt is None and not entry.ctx.out and _blank(entry.st):
                continue  # a rule this patient has no data for: nothing to keep
            if self._keep(entry, rule_id, states):
                changed.add(patient)
            out.extend(entry.ctx.out)
        store.save(conn, [(p, store.pack(loaded.states[p])) for p in sorted(changed)])
        store.schedule(conn, schedules)
        return resources.upsert(conn, self._with_author(out), None)

    def schedule_now(self, conn: Connection, patient: str, rule_id: str,
                     at: float | None = None) -> None:
        """Make a time-based rule run for ``patient`` at the next tick (e.g. after an override
        gave it a medication schedule); ``at`` (epoch s) instead of the clock's now."""
        store.schedule(conn, [(patient, rule_id, self.clock().timestamp() if at is None
                               else at)])
