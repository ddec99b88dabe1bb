"""Runs: consecutive prepared messages the commit writes together.

``Pipeline.commit`` decides which prepared messages form a run (and which go to the lock path
instead); ``write_run`` writes one, in the commit's stage order: the identifiers it registers
(releasing the quarantined messages waiting for them), its resources in one upsert, the rules
on each message in message order, their outputs, the outbox, and every message's outcome. This
is the commit half of the pipeline package, the one place that knows the order of the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from hub.contracts import Identifier
from hub.identity import IdentityResolver
from hub.pipeline.outcome import refs_json
from hub.rules import RulesStage
from hub.staging import IdentityKey, Prepared
from hub.store import dead_letters, inbox, outbox, quarantine, registry, resources
from hub.sync.routing import OutboxRouter
from hub.telemetry import Telemetry


class StaleIdentity(Exception):
    """An identifier a run registers was bound elsewhere after it was checked."""


@dataclass
class Run:
    """Consecutive prepared messages written together: their rows merged (the first of equal
    rows kept: an upsert of the same content again changes nothing), who owns each row, and the
    identifiers they register."""

    messages: list[tuple[Prepared, set[tuple[str, str]]]] = field(default_factory=list)
    rows: dict[tuple[str, str], resources.Row] = field(default_factory=dict)
    owner: dict[tuple[str, str], int] = field(default_factory=dict)
    tokens: list[resources.Token] = field(default_factory=list)
    proposed: dict[IdentityKey, str] = field(default_factory=dict)

    def conflicts(self, p: Prepared) -> bool:
        """Does ``p`` write a resource this run writes, with other content? Then ``p`` starts a
        new run, so each version is written (and delivered) in order, as one by one."""
        rows, staged = self.rows, p.staged.rows
        # The keys both write, found by a set operation in C: mostly none, so the rows are not
        # looked at one by one in Python (a commit holds ~10,000 rows).
        return any(rows[k][2] != staged[k][2] for k in rows.keys() & staged.keys())

    def add(self, p: Prepared, drop: set[tuple[str, str]]) -> None:
        index = len(self.messages)
        self.messages.append((p, drop))
        rows, owner, staged = self.rows, self.owner, p.staged.rows
        if not drop and rows.keys().isdisjoint(staged):  # mostly: every row is new to the run
            rows.update(staged)
            owner.update(dict.fromkeys(staged, index))
        else:
            for key, row in staged.items():
                if key not in rows and key not in drop:
                    rows[key] = row
                    owner[key] = index
        self.tokens.extend(p.staged.tokens)
        self.proposed.update((k, rid) for k, rid in p.registrations if k not in self.proposed)


def write_run(conn: Connection, run: Run, resolver: IdentityResolver, *, rules: RulesStage,
              router: OutboxRouter, telemetry: Telemetry, releases: bool = False
              ) -> list[tuple[str, str]]:
    """Write ``run`` in the caller's transaction (its savepoint): registrations, resources,
    rules, derived resources, outbox, each message's outcome; (source, status) per message.
    Raises ``StaleIdentity`` if an identifier it registers was bound elsewhere since.
    ``releases`` (some source is in identity mode lookup): the quarantined messages waiting
    for the identifiers it registers go back in the queue (hub.store.quarantine)."""
    for key, rid in run.proposed.items():
        if registry.register(conn, key[0], Identifier(key[1], key[2]), rid) != rid:
            raise StaleIdentity
    if releases and run.proposed:
        quarantine.release(conn, run.proposed)
    with telemetry.span("store", batch=len(run.messages), resources=len(run.rows)):
        # Which Observations changed matters only to routing them to destinations.
        written = resources.write(conn, list(run.rows.values()), run.tokens,
                                  unreported=None if router.routes else "Observation")
    changed = {(w.res_type, w.res_id): w for w in written}
    resolver.forget_content(changed)  # Patients/Devices given: their content moved
    with telemetry.span("rules", batch=len(run.messages)):
        derived_of = _rules_of_run(conn, run, rules)
    items: list[tuple[str, resources.Written]] = []
    finished: list[inbox.Finished] = []
    outcomes: list[tuple[str, str]] = []
    for index, (p, drop) in enumerate(run.messages):
        with telemetry.message_trace(p.source, p.message_id, p.traceparent):
            with telemetry.span("rules"):
                derived = derived_of[index]
                derived_written = resources.upsert(conn, derived, p.message_id)
            if router.routes:  # (the filters read the content)
                mine = [k for k in p.staged.rows if k in changed and run.owner[k] == index]
                items += router.route(
                    [changed[k] for k in mine] + derived_written,
                    [orjson.loads(run.rows[k][-1]) for k in mine] + derived)
            refs = p.refs
            if drop or derived:  # (rarely: the prepared list is kept as its JSON)
                gone = {f"{t}/{i}" for t, i in drop}
                kept = [r for r in orjson.loads(refs or "[]") if r not in gone]
                refs = refs_json(derived, kept)
            items += p.replies
            finished.append(inbox.Finished(p.message_id, p.status, p.error_text,
                                           p.notes_text, refs))
            if p.dead_letter:
                dead_letters.add_inbound(conn, p.message_id, "normalize", p.error_text or "")
            if p.status == inbox.STATUS_QUARANTINED:
                # Not reached today (what quarantines is decided under the lock); should it be,
                # the message waits for any registry change rather than for nothing.
                quarantine.hold(conn, p.message_id, ())
            outcomes.append((p.source, p.status))
    with telemetry.span("outbox"):
        outbox.enqueue(conn, items)
    inbox.finish_many(conn, finished)
    return outcomes


def _rules_of_run(conn: Connection, run: Run, rules: RulesStage) -> list[list[dict[str, Any]]]:
    """Each message's rule outputs, evaluated in message order in one go (one read and one
    write of each patient's rule state for the whole run)."""
    found = rules.evaluate_reads(conn, [p.rules for p, _ in run.messages])
    if found is None:  # the rules changed since prepare read them: one by one
        return [_rules_of(conn, p, rules) for p, _ in run.messages]
    return found


def _rules_of(conn: Connection, p: Prepared, rules: RulesStage) -> list[dict[str, Any]]:
    if p.rules is None:
        return []
    derived = rules.evaluate_read(conn, p.rules)
    if derived is None:  # the rules changed since prepare read them: read them again
        derived = rules.evaluate(conn, [orjson.loads(row[-1]) for key, row
                                        in p.staged.rows.items() if key[0] == "Observation"])
    return derived
