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
from hub.rules import RuleInput, store
from hub.rules.kinds import KINDS
from hub.rules.kinds.base import Kind
from hub.rules.lifecycle import Ctx
from hub.rules.model import Rule
from hub.rules.outputs import hub_device
from hub.rules.program import Program, empty_program, fingerprint, load_program
from hub.rules.readings import Sample, samples_by_patient
from hub.rules.statecache import StateCache
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


@dataclass(slots=True)
class _Live:
    """One patient's states during an evaluation: the row text they pack to (``changed``: not
    the text read), per-rule JSON, decoded states, and the patient's own time zone."""

    text: str
    states: dict[str, str]
    decoded: dict[str, dict[str, Any]]
    zone: str | None
    changed: bool = False


# (effective rule, version, kind, time zone, whether the kind has a flush of its own)
_Opener = tuple[Rule, int, Kind, str, bool]


class RulesEngine:
    """Rules from ``folder`` (``mappings/rules``) or a given ``program``; ``clock`` is the
    scheduler's notion of now (tests and the simulator inject theirs); ``state_cache``: how
    many patients' decoded states to keep between messages (``hub.rules.statecache``; 0:
    decode every time)."""

    def __init__(self, folder: Path | None = None, *, program: Program | None = None,
                 clock: Clock = utcnow, state_cache: int = 2048) -> None:
        self.folder = folder
        self.clock = clock
        if program is None:
            program = load_program(folder) if folder is not None and folder.is_dir() \
                else empty_program()
        self.program = program
        self.last_error: MappingError | None = None
        self._rules_for: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._openers: dict[tuple[str, str | None, str | None], _Opener | None] = {}
        self._cache = StateCache(state_cache)

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
        self._openers = {}
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
              overrides: dict[store.Key, str], zone: str | None,
              decoded: dict[str, dict[str, Any]] | None = None) -> _Open | None:
        """The rule as it applies to the patient, with its state: taken from ``decoded``
        (states the state cache holds decoded from ``states``) or decoded now; None when the
        rule is disabled for the patient."""
        key = (rule_id, overrides.get((patient, rule_id)) if overrides else None, zone)
        try:
            opener = self._openers[key]
        except KeyError:
            opener = self._openers[key] = self._opener(*key)
        if opener is None:
            return None
        rule, version, kind, tz, _ = opener
        stored = states.get(rule_id)
        st = decoded.get(rule_id) if decoded is not None else None
        if st is None:
            st = orjson.loads(stored) if stored else {}
        program = self.program
        return _Open(Ctx(patient, rule, version, program.care_team, program.measures, tz),
                     st, kind, stored)

    def _opener(self, rule_id: str, params: str | None, zone: str | None) -> _Opener | None:
        """What opening ``rule_id`` needs for one override text and time zone, found once per
        loaded program (each lookup per rule per message was ~1 µs; bench/rules.py)."""
        program = self.program
        try:
            eff = program.effective(rule_id, params, zone)
        except ValueError as exc:
            # An override that no longer fits an edited rule: run the program's rule, say why.
            log.warning("override of rule %s ignored for a patient: %s", rule_id, exc)
            eff = program.effective(rule_id, None, zone)
        rule = eff.rule
        if not rule.enabled:
            return None
        kind = KINDS[rule.kind]
        return rule, program.versions[rule_id], kind, eff.tz, type(kind).flush is not Kind.flush

    # ------------------------------------------------------------------ per message

    def evaluate(self, conn: Connection, observations: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
        """The RulesStage: new Observations in, resources to store and deliver out."""
        return self._evaluate(conn, [samples_by_patient(observations, self.program)])[0]

    def read(self, observations: list[dict[str, Any]]) -> RuleInput:
        """The samples of ``observations`` (no database): the pipeline reads them while it
        prepares a message, in whichever process does that."""
        return RuleInput(self.program.fingerprint, samples_by_patient(observations, self.program))

    def evaluate_read(self, conn: Connection, read: RuleInput) -> list[dict[str, Any]] | None:
        found = self.evaluate_reads(conn, [read])
        return None if found is None else found[0]

    def evaluate_reads(self, conn: Connection, reads: list[RuleInput | None]
                       ) -> list[list[dict[str, Any]]] | None:
        """``evaluate_read`` of several messages' reads, in order, as if one after the other in
        this transaction (None: no Observations); None if any was read by rules since edited.
        """
        if any(r is not None and r.program != self.program.fingerprint for r in reads):
            return None  # read by rules since edited: evaluate the Observations instead
        return self._evaluate(conn, [r.samples if r is not None else {} for r in reads])

    def _evaluate(self, conn: Connection, messages: list[dict[str, list[Sample]]]
                  ) -> list[list[dict[str, Any]]]:
        """Each message's samples (per patient) in turn; each message's outputs.

        The patients of all the messages are read in one query and written back once each,
        with their final states: a worker transaction of many one-reading messages paid the
        state row's read and write per message (bench/rules.py --batch 1). Between messages a
        patient's states stay decoded in ``live``, exactly as the next message would have read
        them back."""
        patients = list(dict.fromkeys(p for grouped in messages for p in grouped))
        if not patients:
            return [[] for _ in messages]
        loaded = store.load(conn, patients, unpacked=False)
        overrides = loaded.overrides
        live: dict[str, _Live] = {}
        for patient in patients:
            text = loaded.texts.get(patient, "")
            cached = self._cache.take(patient, text)
            states, decoded = cached if cached is not None else (store.unpack(text), {})
            live[patient] = _Live(text, states, decoded, self._zone(patient, overrides))
        outputs: list[list[dict[str, Any]]] = []
        schedules: list[tuple[str, str, float | None]] = []
        for grouped in messages:
            out: list[dict[str, Any]] = []
            for patient, samples in grouped.items():
                self._run_samples(patient, samples, live[patient], overrides, out, schedules)
            outputs.append(self._with_author(out))
        store.save(conn, [(p, pl.text) for p, pl in live.items() if pl.changed])
        store.schedule(conn, schedules)
        for patient, pl in live.items():  # evaluated whole: reusable (statecache)
            self._cache.put(patient, pl.text, pl.states, pl.decoded)
        return outputs

    def _run_samples(self, patient: str, samples: list[Sample], pl: _Live,
                     overrides: dict[store.Key, str], out: list[dict[str, Any]],
                     schedules: list[tuple[str, str, float | None]]) -> None:
        """One message's samples of one patient: each rule reading them takes its samples in
        order, then is flushed once. Rules share nothing but the read-only program, so rule by
        rule gives the states and outputs that sample by sample gave, in the same order."""
        # _open and _keep written out here, and one Ctx for the patient's rules (retargeted
        # rule by rule; kinds keep no Ctx): per rule per message, those calls and objects
        # were a fifth of the rules' cost of a one-reading message (bench.rules --batch 1).
        states, decoded, zone = pl.states, pl.decoded, pl.zone
        openers = self._openers
        program = self.program
        care_team, measures = program.care_team, program.measures
        changed = False
        ctx: Ctx | None = None
        for rule_id, own in self._plan(samples):
            key = (rule_id, overrides.get((patient, rule_id)) if overrides else None, zone)
            try:
                opener = openers[key]
            except KeyError:
                opener = openers[key] = self._opener(*key)
            if opener is None:
                continue
            rule, version, kind, tz, flushes = opener
            stored = states.get(rule_id)
            st = decoded.get(rule_id)
            if st is None:
                st = orjson.loads(stored) if stored else {}
            if ctx is None:
                ctx = Ctx(patient, rule, version, care_team, measures, tz)
            else:
                ctx.rule, ctx.version, ctx.tz = rule, version, tz
                if ctx.out:
                    ctx.out = []
            kind.on_samples(ctx, st, own)
            if flushes:
                kind.flush(ctx, st)
            due = kind.due(ctx, st)
            scheduled = st.get("_due")
            if due is not None and (scheduled is None or due < scheduled):
                st["_due"] = due
                schedules.append((patient, rule_id, due))
            text = orjson.dumps(st).decode()
            if text != stored:
                states[rule_id] = text
                changed = True
            decoded[rule_id] = st  # what states[rule_id] now decodes to
            if ctx.out:
                out.extend(ctx.out)
        if changed:
            pl.text = store.pack(states)
            pl.changed = True

    def _plan(self, samples: list[Sample]) -> list[tuple[str, list[Sample]]]:
        """(rule id, the samples it reads, in order) for each rule reading any of ``samples``,
        rules in the order the samples first reach them (the order outputs are emitted in).

        Samples are grouped by the measures they carry first: a 500-reading message holds a
        few kinds of reading, so the rules are looked up per kind, not per sample and rule
        (bench/rules.py)."""
        if len(samples) == 1:
            return [(rule_id, samples) for rule_id in self._rules_of(tuple(samples[0].values))]
        keys = [tuple(sample.values) for sample in samples]
        groups: dict[tuple[str, ...], list[Sample]] = {}
        for key, sample in zip(keys, samples, strict=True):
            group = groups.get(key)
            if group is None:
                groups[key] = [sample]
            else:
                group.append(sample)
        # A rule is first reached by the first sample of the first kind that it reads.
        reached: dict[str, list[tuple[str, ...]]] = {}
        for key in groups:
            for rule_id in self._rules_of(key):
                reached.setdefault(rule_id, []).append(key)
        plan: list[tuple[str, list[Sample]]] = []
        for rule_id, kinds in reached.items():
            if len(kinds) == 1:
                plan.append((rule_id, groups[kinds[0]]))
            elif len(kinds) == len(groups):
                plan.append((rule_id, samples))
            else:
                wanted = set(kinds)
                plan.append((rule_id, [s for k, s in zip(keys, samples, strict=True)
                                       if k in wanted]))
        return plan

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
        if out and any(r["resourceType"] in ANNOUNCED or r.get("device") for r in out):
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
