"""``Pipeline``: the stages wired in order (the package docstring draws them).

``convert`` runs one message's stages without writing; ``_process`` writes them whole (the
lock path); ``prepare`` makes what a message will write without writing; ``commit`` forms runs
of prepared messages (``hub.pipeline.runs`` writes each) and sends the others to the lock path;
``run_batch`` claims, prepares and commits a batch in this process.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from hub.contracts import Extraction, Identifier, Measurement, RawMessage
from hub.errors import DataError, UnassignedDeviceError, UnregisteredIdentityError
from hub.identity import IdentityModes, IdentityResolver
from hub.identity.modes import CREATE
from hub.mappings.catalogue import MappingSet
from hub.normalize.hl7v2_observation import build_detailed_observation
from hub.normalize.observation import Lineage, build_observation
from hub.normalize.plausibility import held_reason
from hub.pipeline.outcome import Outcome, Resolver, describe, refs_json
from hub.pipeline.runs import Run, write_run
from hub.registry import ConnectorRegistry
from hub.rules import NoRules, RulesStage
from hub.staging import IdentityKey, NeedsLock, Prepared, StagedResolver
from hub.store import dead_letters, inbox, outbox, quarantine, registry, resources, search
from hub.store.db import WriterGap, is_postgres, is_transient, write_tx
from hub.store.dialect import DriverSavepoint
from hub.store.sampled import SampledGroups
from hub.sync.routing import OutboxRouter
from hub.telemetry import Telemetry

log = logging.getLogger("hub.pipeline")


def _drop_matched(conn: Connection, extraction: Extraction, message_id: str) -> list[str]:
    """R4 conditional create: the resources whose match is stored are not written (the match
    is left untouched); returns the matches' ``Type/id`` for the message's lineage."""
    matches = search.conditional_matches(conn, extraction.create_only, message_id)
    if matches:
        def keep(r: dict[str, Any]) -> bool:
            return (r["resourceType"], r["id"]) not in matches

        extraction.resources = [r for r in extraction.resources if keep(r)]
        extraction.patients = [r for r in extraction.patients if keep(r)]
        extraction.devices = [r for r in extraction.devices if keep(r)]
    return list(matches.values())


def _waits(conn: Connection, resolver: Resolver, m: Measurement,
           exc: UnassignedDeviceError) -> set[tuple[str, str, str]]:
    """What the reading that raised ``exc`` waits for: the key ``exc`` names and, when that is
    its device unregistered, its patient too if that is unregistered as well (so the message
    waits for both, and either registration releases it)."""
    waits = {exc.waits} if exc.waits is not None else set()
    if isinstance(exc, UnregisteredIdentityError) and exc.waits is not None \
            and exc.waits[0] == "Device" and m.patient is not None:
        try:
            resolver.patient(conn, m, "")  # a named patient: by identifier (no device needed)
        except UnassignedDeviceError as also:
            if also.waits is not None:
                waits.add(also.waits)
    return waits


@dataclass
class Pipeline:
    """Stages wired together. ``mappings`` is a callable so hot reload swaps sets atomically."""

    connectors: ConnectorRegistry
    mappings: Callable[[], MappingSet]
    rules: RulesStage = field(default_factory=NoRules)
    router: OutboxRouter = field(default_factory=OutboxRouter)
    telemetry: Telemetry = field(default_factory=Telemetry.disabled)
    identity_cache: dict[tuple[str, str, str], str] = field(default_factory=dict)
    identity_modes: IdentityModes = field(default_factory=IdentityModes)  # create/lookup by source
    # Bindings prepare read from the registry (committed ones), and the registry epoch they were
    # read at: a patient merge (in any process) bumps it, which makes everything prepared before
    # stale (``hub.staging``, ``hub.store.registry.epoch``).
    staged_identities: dict[IdentityKey, str] = field(default_factory=dict)
    epoch: int = -1
    # A batch stops taking claimed messages after this long, and commits. On SQLite the batch
    # holds the database write lock, so every POST waits for it: 64 messages of 500 readings
    # held it for seconds (measured: POST p99 7.1 s in bench.ingest). The rest of the claim
    # stays 'received' for the next batch; at least one message is always processed.
    batch_seconds: float = 0.25
    # The next claim's size: a little more than the last time-capped batch got through (never
    # more than the caller's limit; 0 = the limit), instead of fetching a full claim of large
    # bodies it will mostly hand back (measured with 500-reading messages: 64 claimed, ~8
    # processed per 0.25 s; the claim was 5 % of a PostgreSQL worker's time, and the worker's
    # CPU per reading went 58.7 → 54.5 µs, mean of 3 runs of bench.worker).
    _next_claim: int = field(default=0, init=False, repr=False)  # 0: the caller's limit

    def convert(self, conn: Connection, raw: RawMessage, resolver: Resolver) -> Outcome:
        """Everything a message yields, without writing it (``hub convert`` uses this alone)."""
        with self.telemetry.span("decode", source=raw.source):
            connector = self.connectors.get(raw.source)
            document = connector.decode(raw.body, raw.content_type)
            mapping_set = self.mappings()
            extraction: Extraction = connector.extract(document,
                                                       mapping_set.with_meta(raw.meta))
        resolver.begin_message(raw.source)
        out = Outcome(status=inbox.STATUS_PROCESSED,
                      errors=[describe(e) for e in extraction.errors])
        lineage = Lineage(raw.id, raw.source)
        unassigned = 0
        if extraction.create_only:
            if isinstance(resolver, StagedResolver):
                raise NeedsLock("conditional create")  # whether a match exists: under the lock
            out.matched = _drop_matched(conn, extraction, raw.id)
        sampled = SampledGroups(mapping_set.sampling)  # types grouped per period (SampledData)
        given = extraction.patients + extraction.devices
        if given:
            given = resolver.adopt(conn, given)  # binds their identifiers; drops unchanged ones
        if extraction.resources:  # a FHIR PUT Patient/Device: bound under the client's id
            out.warnings += resolver.bind_stated(conn, extraction.resources)
        out.merges = extraction.merges
        with self.telemetry.span("normalize", source=raw.source,
                                 measurements=len(extraction.measurements)):
            for m in extraction.measurements:
                try:
                    spec = mapping_set.types.get(m.type)
                    if spec is None and m.detail is None:
                        raise DataError(f"unknown measurement type '{m.type}'", location=m.location)
                    device_id = resolver.device(conn, m.device)
                    patient_id = resolver.patient(conn, m, device_id)
                    if m.detail is not None:  # HL7v2 OBX and other sources with richer readings
                        gateway = m.detail.gateway
                        out.resources.append(build_detailed_observation(
                            m, spec, patient_id=patient_id, device_id=device_id, lineage=lineage,
                            gateway_id=resolver.device(conn, gateway) if gateway else None))
                        continue
                    assert spec is not None  # a reading without detail has a catalogue type
                    obs = build_observation(
                        m, spec, patient_id=patient_id, device_id=device_id, lineage=lineage)
                    held = held_reason(obs)
                    if held is not None:  # kept, marked preliminary: the lineage says why
                        out.warnings.append(f"{m.location or m.type}: {held}")
                    elif sampled.add(m, obs):
                        continue  # into its period's Observation, merged with the stored one
                    out.resources.append(obs)
                except UnassignedDeviceError as exc:
                    unassigned += 1
                    out.errors.append(describe(exc))
                    out.waits |= _waits(conn, resolver, m, exc)
                except DataError as exc:
                    out.errors.append(describe(exc))
        if sampled.periods and isinstance(resolver, StagedResolver):
            raise NeedsLock("sampled data")  # merged with the stored period: read under the lock
        out.resources = (given + resolver.take_new()
                         + extraction.resources + out.resources + sampled.observations(conn))
        total = (len(extraction.measurements) + len(extraction.resources) + len(extraction.errors)
                 + len(out.matched))
        produced = total - len(out.errors)
        if out.errors and unassigned == len(out.errors) and produced == 0:
            out.status = inbox.STATUS_QUARANTINED
        elif out.errors:
            out.status = inbox.STATUS_PARTIAL if produced > 0 else inbox.STATUS_FAILED
        return out

    def _process(self, conn: Connection, raw: RawMessage, resolver: IdentityResolver) -> Outcome:
        try:
            out = self.convert(conn, raw, resolver)
        except DataError as exc:
            out = Outcome(status=inbox.STATUS_FAILED, errors=[describe(exc)])
        if out.status in (inbox.STATUS_FAILED, inbox.STATUS_QUARANTINED):
            out.resources = []
        with self.telemetry.span("store", resources=len(out.resources)):
            written = resources.upsert(conn, out.resources, raw.id)
            if out.merges and out.status != inbox.STATUS_FAILED:
                written += resolver.apply_merges(conn, out.merges, raw.id)
        observations = [r for r in out.resources if r["resourceType"] == "Observation"]
        with self.telemetry.span("rules", observations=len(observations)):
            derived = self.rules.evaluate(conn, observations) if observations else []
            written += resources.upsert(conn, derived, raw.id)
        with self.telemetry.span("outbox"):
            # With the content, category/program filters decide here which outbox rows exist;
            # resources without content here (merge rewrites) are filtered at delivery.
            outbox.enqueue(conn, self.router.route(written, out.resources + derived))
        refs = [f"{r['resourceType']}/{r['id']}" for r in out.resources + derived] + out.matched
        inbox.finish(conn, raw.id, out.status, error=out.error_text, resource_refs=refs,
                     notes=out.notes_text)
        if out.status == inbox.STATUS_QUARANTINED:  # released when a change resolves one
            quarantine.hold(conn, raw.id, out.waits)
        if out.errors and out.status != inbox.STATUS_QUARANTINED:
            dead_letters.add_inbound(conn, raw.id, "normalize", out.error_text or "")
        return out

    # ------------------------------------------------------------------ prepare

    def prepare(self, conn: Connection, raw: RawMessage, epoch: int | None = None) -> Prepared:
        """Everything ``raw`` will write, made without writing (module docstring); ``conn``
        only reads. ``epoch``: the committer's identity epoch this is prepared under."""
        epoch = self.epoch if epoch is None else epoch
        resolver = StagedResolver(self.staged_identities)
        with self.telemetry.message_trace(raw.source, raw.id, raw.traceparent):
            if self.identity_modes.of(raw.source) != CREATE:  # unknown identifiers quarantine
                return Prepared(raw.id, raw.source, raw.traceparent, epoch,
                                fallback="identity lookup mode")
            try:
                out = self.convert(conn, raw, resolver)
            except NeedsLock as exc:
                return Prepared(raw.id, raw.source, raw.traceparent, epoch, fallback=exc.reason)
            except DataError as exc:
                out = Outcome(status=inbox.STATUS_FAILED, errors=[describe(exc)])
            except Exception as exc:
                if is_transient(exc, conn.engine):
                    raise
                # A bug: processed again under the lock, where it is recorded as one.
                return Prepared(raw.id, raw.source, raw.traceparent, epoch,
                                fallback="internal error")
            if out.merges:
                return Prepared(raw.id, raw.source, raw.traceparent, epoch,
                                fallback="patient merges")
            if out.status in (inbox.STATUS_FAILED, inbox.STATUS_QUARANTINED):
                out.resources = []  # and nothing registered: a Device nothing refers to
            with self.telemetry.span("stage", resources=len(out.resources)):
                staged = resources.stage(conn.dialect, out.resources, raw.id)
            observations = [r for r in out.resources if r["resourceType"] == "Observation"]
            registrations = resolver.registrations if out.resources else []
            return Prepared(
                raw.id, raw.source, raw.traceparent, epoch, status=out.status,
                error_text=out.error_text, notes_text=out.notes_text,
                dead_letter=bool(out.errors) and out.status != inbox.STATUS_QUARANTINED,
                staged=staged, refs=refs_json(out.resources),
                registrations=registrations,
                new=resolver.bare if registrations else [],
                rules=self.rules.read(observations) if observations else None,
                # Replies owed to the sender (HL7v2 deferred application ACKs) with the outcome
                # they report (hub.sync.replies); made here, where the body is at hand.
                replies=self.router.replies(raw, out.status))

    def _prepare_all(self, conn: Connection, claimed: list[RawMessage]) -> list[Prepared]:
        """Prepare claimed messages in order until ``batch_seconds`` (at least one)."""
        self._follow_epoch(conn)
        deadline = time.monotonic() + self.batch_seconds
        prepared: list[Prepared] = []
        for raw in claimed:
            prepared.append(self.prepare(conn, raw))
            if prepared[-1].fallback is None:
                raw.body = b""  # not needed unless the message is processed again, read back then
            if time.monotonic() > deadline:
                break
        return prepared

    # ------------------------------------------------------------------ commit

    def commit(self, conn: Connection, batch: list[Prepared],
               raw_of: Callable[[str], RawMessage], resolver: IdentityResolver
               ) -> list[tuple[str, str]]:
        """Write prepared messages, in order, in the caller's transaction; (source, status)
        per message. A message prepare sent to the lock, prepared under an older identity
        epoch, or whose registrations are stale is processed whole by ``raw_of`` (the message
        with its body) and ``resolver`` (call its committed()/rolled_back() after)."""
        # Under the lock now: a merge committed since prepare read the registry makes what it
        # prepared stale (each such message is processed whole); on PostgreSQL this read also
        # holds merges off until this transaction ends.
        self._follow_epoch(conn)
        outcomes: list[tuple[str, str]] = []
        bound: dict[IdentityKey, str] = {}  # registered in this transaction by earlier runs
        run = Run()
        for p in batch:
            drop = self._checked(conn, p, bound, run)
            if drop is not None and run.conflicts(p):
                outcomes += self._write_run(conn, run, bound, raw_of, resolver)
                run = Run()
                drop = self._checked(conn, p, bound, run)
            if drop is not None:
                run.add(p, drop)
                continue
            outcomes += self._write_run(conn, run, bound, raw_of, resolver)
            run = Run()
            outcomes.append(self._under_lock(conn, raw_of(p.message_id), resolver))
        outcomes += self._write_run(conn, run, bound, raw_of, resolver)
        return outcomes

    def _checked(self, conn: Connection, p: Prepared, bound: dict[IdentityKey, str],
                 run: Run) -> set[tuple[str, str]] | None:
        """None if ``p`` must be processed under the lock; else the keys of the Patients/Devices
        it would register that this transaction registered already (not written again)."""
        if p.fallback is not None or p.epoch != self.epoch:
            return None
        drop: set[tuple[str, str]] = set()
        for key, rid in p.registrations:
            known = bound.get(key) or run.proposed.get(key)
            if known is None:
                if registry.lookup(conn, key[0], Identifier(key[1], key[2])) is not None:
                    return None  # bound since prepare read the registry
                continue
            if known != rid:
                return None
            if (key[0], rid) in p.new:  # a bare registration, not a Patient/Device it gives
                drop.add((key[0], rid))
        return drop

    def _write_run(self, conn: Connection, run: Run, bound: dict[IdentityKey, str],
                   raw_of: Callable[[str], RawMessage], resolver: IdentityResolver
                   ) -> list[tuple[str, str]]:
        if not run.messages:
            return []
        savepoint = DriverSavepoint(conn)
        try:
            outcomes = write_run(conn, run, resolver, rules=self.rules, router=self.router,
                                 telemetry=self.telemetry,
                                 releases=self.identity_modes.any_lookup)
        except Exception as exc:
            if is_transient(exc, conn.engine):
                raise
            savepoint.rollback()
            # One of them trips something (a bug, or a registration raced): each again on its
            # own, in its own savepoint, so only the culprit fails.
            log.warning("combined write of %d messages failed (%s); one by one instead",
                        len(run.messages), type(exc).__name__)
            return [self._under_lock(conn, raw_of(p.message_id), resolver)
                    for p, _ in run.messages]
        savepoint.commit()
        bound.update(run.proposed)
        return outcomes

    def _under_lock(self, conn: Connection, raw: RawMessage, resolver: IdentityResolver
                    ) -> tuple[str, str]:
        """A message processed whole inside the transaction, in its own savepoint."""
        with self.telemetry.message_trace(raw.source, raw.id, raw.traceparent):
            out = self._process_isolated(conn, raw, resolver)
            # Replies owed to the sender (HL7v2 deferred application ACKs), with the outcome
            # they report: hub.sync.replies.
            outbox.enqueue(conn, self.router.replies(raw, out.status))
        if out.merges and out.status != inbox.STATUS_FAILED:
            self._follow_epoch(conn)  # the merge bumped the registry epoch in this transaction
        return raw.source, out.status

    def _follow_epoch(self, conn: Connection) -> None:
        """Patients merged (here or in another process) since bindings were read: those read
        before are stale, and so is everything prepared with them (see ``hub.staging``)."""
        current = registry.epoch(conn, share=is_postgres(conn.engine))
        if current != self.epoch:
            self.staged_identities.clear()
            self.epoch = current

    # ------------------------------------------------------------------ a batch, in process

    def run_batch(self, engine: Engine, limit: int, only: list[str] | None = None,
                  gap: WriterGap | None = None) -> int:
        """Claim up to ``limit`` received messages, prepare (stopping early after
        ``batch_seconds``: the others stay received) and commit them; returns how many were
        processed. On SQLite the prepare phase holds no lock: the messages are read, prepared,
        and taken under the write lock only if still received.

        ``only`` restricts the claim to those message ids (a synchronous FHIR write processes
        its own message, not whatever backlog is ahead of it); 0 means none of them was free.
        ``gap``: the write transaction waits for it (a worker's loop; see ``WriterGap``).
        """
        resolver = IdentityResolver(self.identity_cache, self.identity_modes)
        size = min(limit, self._next_claim or limit)
        try:
            if is_postgres(engine):
                with write_tx(engine, gap) as conn:
                    claimed = inbox.claim(conn, size, only)
                    raws = {raw.id: raw for raw in claimed}
                    prepared = self._prepare_all(conn, claimed)
                    outcomes = self.commit(conn, prepared, _reader(conn, raws), resolver)
            else:
                with engine.connect() as conn:
                    claimed = inbox.claim(conn, size, only, lock=False)
                    raws = {raw.id: raw for raw in claimed}
                    prepared = self._prepare_all(conn, claimed)
                    conn.rollback()
                with write_tx(engine, gap) as conn:
                    taken = inbox.take(conn, [p.message_id for p in prepared])
                    outcomes = self.commit(conn, [p for p in prepared if p.message_id in taken],
                                           _reader(conn, raws), resolver)
        except BaseException as exc:
            resolver.rolled_back()
            if isinstance(exc, Exception) and is_transient(exc, engine):
                # Most likely a deadlock with another worker: each batch locks the rows of its
                # messages (rule state, shared resources) in message order, and two batches can
                # meet in opposite orders. The next batch takes one message, so this worker
                # cannot close the same cycle again while the survivor finishes.
                self._next_claim = 1
            raise
        resolver.committed()
        # Only a batch cut short by the time budget says how many fit; one that ran out of
        # messages says nothing, so the next claim asks for the full limit again.
        done = len(prepared)
        self._next_claim = done + done // 2 + 1 if done < len(claimed) else 0
        for source, status in outcomes:
            self.telemetry.count_outcome(source, status)
        return len(outcomes)

    def _process_isolated(
        self, conn: Connection, raw: RawMessage, resolver: IdentityResolver
    ) -> Outcome:
        savepoint = conn.begin_nested()
        try:
            out = self._process(conn, raw, resolver)
        except Exception as exc:
            if is_transient(exc, conn.engine):
                raise  # the database gave up on the transaction, not on this message: retry all
            # A bug, not bad data: keep the message, record a reason without its content.
            savepoint.rollback()
            resolver.rolled_back()
            # Frames only: an exception's text may quote message content (PHI).
            log.error("internal error (%s) processing message %s\n%s", type(exc).__name__,
                      raw.id, "".join(traceback.format_tb(exc.__traceback__)))
            reason = f"internal error ({type(exc).__name__}); see logs for message {raw.id}"
            inbox.finish(conn, raw.id, inbox.STATUS_FAILED, error=reason, resource_refs=[])
            dead_letters.add_inbound(conn, raw.id, "internal", reason)
            return Outcome(status=inbox.STATUS_FAILED, errors=[reason])
        savepoint.commit()
        return out


def _reader(conn: Connection, raws: dict[str, RawMessage]) -> Callable[[str], RawMessage]:
    """A claimed message by id, its body read back if prepare let it go."""
    def raw_of(message_id: str) -> RawMessage:
        raw = raws[message_id]
        if not raw.body:
            raw.body = inbox.bodies(conn, [message_id]).get(message_id, b"")
        return raw
    return raw_of
