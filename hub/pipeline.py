"""The pipeline: the one module that knows the order of the stages.

    inbox (durable raw message)
      → connector.decode / extract         (connectors)
      → identity + build_observation       (normalize)
      → resources.upsert                   (store)
      → rules.evaluate                     (rules)
      → outbox.enqueue                     (sync)
      → inbox.finish                       (same transaction)

A batch of claimed messages is processed in one transaction, each message inside a savepoint:
a crash anywhere rolls the whole batch back to "received" (nothing lost, and nothing half-done to
duplicate), and a bug on one message fails only that message. Resource ids are deterministic, so
reprocessing a message rewrites the same resources without new versions.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from hub.contracts import Extraction, PatientMerge, RawMessage
from hub.errors import DataError, UnassignedDeviceError
from hub.identity import IdentityModes, IdentityResolver
from hub.mappings.catalogue import MappingSet
from hub.normalize.hl7v2_observation import build_detailed_observation
from hub.normalize.observation import Lineage, build_observation
from hub.normalize.plausibility import held_reason
from hub.registry import ConnectorRegistry
from hub.rules import NoRules, RulesStage
from hub.store import dead_letters, inbox, outbox, resources
from hub.store.db import is_transient, write_tx
from hub.store.sampled import SampledGroups
from hub.sync.routing import OutboxRouter
from hub.telemetry import Telemetry

log = logging.getLogger("hub.pipeline")


@dataclass
class Outcome:
    """What processing one message produced."""

    status: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # stored, but held for review
    merges: list[PatientMerge] = field(default_factory=list)

    @property
    def error_text(self) -> str | None:
        return _summary(self.errors)

    @property
    def notes_text(self) -> str | None:
        return _summary(self.warnings)


def _summary(lines: list[str]) -> str | None:
    if not lines:
        return None
    shown = lines[:20]
    more = len(lines) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


def _describe(error: DataError) -> str:
    return f"{error.location}: {error.message}" if error.location else error.message


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

    def convert(self, conn: Connection, raw: RawMessage, resolver: IdentityResolver) -> Outcome:
        """Everything a message yields, without writing it (``hub convert`` uses this alone)."""
        with self.telemetry.span("decode", source=raw.source):
            connector = self.connectors.get(raw.source)
            document = connector.decode(raw.body, raw.content_type)
            extraction: Extraction = connector.extract(document, self.mappings())
        mapping_set = self.mappings()
        resolver.begin_message(raw.source)
        out = Outcome(status=inbox.STATUS_PROCESSED,
                      errors=[_describe(e) for e in extraction.errors])
        lineage = Lineage(raw.id, raw.source)
        unassigned = 0
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
                    out.errors.append(_describe(exc))
                except DataError as exc:
                    out.errors.append(_describe(exc))
        out.resources = (given + resolver.take_new()
                         + extraction.resources + out.resources + sampled.observations(conn))
        total = len(extraction.measurements) + len(extraction.resources) + len(extraction.errors)
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
            out = Outcome(status=inbox.STATUS_FAILED, errors=[_describe(exc)])
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
        refs = [f"{r['resourceType']}/{r['id']}" for r in out.resources + derived]
        inbox.finish(conn, raw.id, out.status, error=out.error_text, resource_refs=refs,
                     notes=out.notes_text)
        if out.errors and out.status != inbox.STATUS_QUARANTINED:
            dead_letters.add_inbound(conn, raw.id, "normalize", out.error_text or "")
        return out

    def run_batch(self, engine: Engine, limit: int, only: list[str] | None = None) -> int:
        """Claim up to ``limit`` received messages, process and commit them (stopping early after
        ``batch_seconds``: the others stay received); returns how many were processed.

        ``only`` restricts the claim to those message ids (a synchronous FHIR write processes
        its own message, not whatever backlog is ahead of it); 0 means none of them was free.
        """
        resolver = IdentityResolver(self.identity_cache, self.identity_modes)
        # Only (source, status) outlives a message: holding every message's resources until the
        # batch commits kept ~25 containers per reading alive, and the cyclic GC re-scanned them
        # all as they piled up (measured: worker 126 → ~95 µs per reading on SQLite).
        outcomes: list[tuple[str, str]] = []
        try:
            with write_tx(engine) as conn:
                claimed = inbox.claim(conn, min(limit, self._next_claim or limit), only)
                deadline = time.monotonic() + self.batch_seconds
                for raw in claimed:
                    with self.telemetry.message_trace(raw.source, raw.id, raw.traceparent):
                        status = self._process_isolated(conn, raw, resolver).status
                        # Replies owed to the sender (HL7v2 deferred application ACKs), with
                        # the outcome they report: hub.sync.replies.
                        outbox.enqueue(conn, self.router.replies(raw, status))
                    outcomes.append((raw.source, status))
                    raw.body = b""  # the claimed bodies are not needed past their message
                    if time.monotonic() > deadline:
                        break
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
        done = len(outcomes)
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
