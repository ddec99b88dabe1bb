"""The rules engine: the pipeline's ``RulesStage`` (per message) and the scheduler (``tick``).

``evaluate`` runs inside the message's transaction after its Observations are stored: samples
are grouped per patient, the patient's rule states and overrides are read in one query, every
rule reading a sample's measures updates its state (constant work per reading), and each
touched rule flushes once. Changed states are written back in one statement; a time-based rule
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
from hub.rules import RuleInput, store
from hub.rules.kinds import KINDS
from hub.rules.kinds.base import Kind
from hub.rules.lifecycle import Ctx
from hub.rules.outputs import hub_device
from hub.rules.program import Program, empty_program, fingerprint, load_program
from hub.rules.readings import Sample, samples_by_patient
from hub.store import outbox, resources
from hub.store.db import utcnow, write_tx
from hub.store.resources import Written

log = logging.getLogger("hub.rules")
Route = Callable[[list[Written]], list[tuple[str, Written]]]
Clock = Callable[[], datetime]
ANNOUNCED = frozenset({"Flag", "Communication"})


@dataclass
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

    def _open(self, patient: str, rule_id: str, states: dict[store.Key, str],
              overrides: dict[store.Key, str]) -> _Open | None:
        program = self.program
        try:
            rule = program.effective(rule_id, overrides.get((patient, rule_id)))
        except ValueError as exc:
            # An override that no longer fits an edited rule: run the program's rule, say why.
            log.warning("override of rule %s ignored for a patient: %s", rule_id, exc)
            rule = program.rules[rule_id]
        if not rule.enabled:
            return None
        stored = states.get((patient, rule_id))
        st = orjson.loads(stored) if stored else {}
        ctx = Ctx(patient, rule, program.versions[rule_id], program.care_team,
                  program.measures)
        return _Open(ctx, st, KINDS[rule.kind], stored)

    # ------------------------------------------------------------------ per message

    def evaluate(self, conn: Connection, observations: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
        """The RulesStage: new Observations in, resources to store and deliver out."""
        return self._evaluate(conn, samples_by_patient(observations, self.program))

    def read(self, observations: list[dict[str, Any]]) -> RuleInput:
        """The samples of ``observations`` (no database): the pipeline reads them while it
        prepares a message, in whichever process does that."""
        return RuleInput(self.program.fingerprint, samples_by_patient(observations, self.program))

    def evaluate_read(self, conn: Connection, read: RuleInput) -> list[dict[str, Any]] | None:
        if read.program != self.program.fingerprint:
            return None  # read by rules since edited: evaluate the Observations instead
        grouped: dict[str, list[Sample]] = read.samples
        return self._evaluate(conn, grouped)

    def _evaluate(self, conn: Connection, grouped: dict[str, list[Sample]]
                  ) -> list[dict[str, Any]]:
        if not grouped:
            return []
        states, overrides = store.load(conn, list(grouped))
        out: list[dict[str, Any]] = []
        saves: list[tuple[str, str, str]] = []
        schedules: list[tuple[str, str, float | None]] = []
        for patient, samples in grouped.items():
            opened: dict[str, _Open | None] = {}
            for sample in samples:
                for rule_id in self._rules_of(tuple(sample.values)):
                    if rule_id not in opened:
                        opened[rule_id] = self._open(patient, rule_id, states, overrides)
                    entry = opened[rule_id]
                    if entry is not None:
                        entry.kind.on_sample(entry.ctx, entry.st, sample)
            for rule_id, entry in opened.items():
                if entry is None:
                    continue
                entry.kind.flush(entry.ctx, entry.st)
                due = entry.kind.due(entry.ctx, entry.st)
                scheduled = entry.st.get("_due")
                if due is not None and (scheduled is None or due < scheduled):
                    entry.st["_due"] = due
                    schedules.append((patient, rule_id, due))
                self._keep(entry, patient, rule_id, saves)
                out.extend(entry.ctx.out)
        store.save(conn, saves)
        store.schedule(conn, schedules)
        return self._with_author(out)

    @staticmethod
    def _keep(entry: _Open, patient: str, rule_id: str, saves: list[tuple[str, str, str]]
              ) -> None:
        text = orjson.dumps(entry.st).decode()
        if text != entry.stored:
            saves.append((patient, rule_id, text))

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
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
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
        states, overrides = store.load(conn, sorted({p for p, _ in due}))
        out: list[dict[str, Any]] = []
        saves: list[tuple[str, str, str]] = []
        schedules: list[tuple[str, str, float | None]] = []
        for patient, rule_id in due:
            entry = None
            if rule_id in self.program.rules:
                entry = self._open(patient, rule_id, states, overrides)
            if entry is None:  # rule removed or disabled for this patient
                schedules.append((patient, rule_id, None))
                continue
            entry.kind.on_tick(entry.ctx, entry.st, now_t)
            nxt = entry.kind.due(entry.ctx, entry.st)
            if nxt is not None and nxt <= now_t:
                nxt = now_t + 1.0  # never due again within this tick
            entry.st["_due"] = nxt
            schedules.append((patient, rule_id, nxt))
            self._keep(entry, patient, rule_id, saves)
            out.extend(entry.ctx.out)
        store.save(conn, saves)
        store.schedule(conn, schedules)
        return resources.upsert(conn, self._with_author(out), None)

    def schedule_now(self, conn: Connection, patient: str, rule_id: str,
                     at: float | None = None) -> None:
        """Make a time-based rule run for ``patient`` at the next tick (e.g. after an override
        gave it a medication schedule); ``at`` (epoch s) instead of the clock's now."""
        store.schedule(conn, [(patient, rule_id, self.clock().timestamp() if at is None
                               else at)])
