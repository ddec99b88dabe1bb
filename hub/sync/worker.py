"""The sync worker: lanes that drain the outbox to each destination until told to stop.

Each enabled destination gets ``limits.concurrency`` lanes (threads) sharing its sender, hence
its pace (:class:`hub.sync.policy.Pacer`) and circuit. A lane step is: claim up to a Bundle's
worth of due rows (:func:`hub.store.delivery.claim`: per-patient order, leases, SKIP LOCKED on
PostgreSQL), deliver them, record every row's outcome in one transaction. Nothing is held open
across the network call, so any number of ``hub sync`` / ``hub serve`` processes can share one
PostgreSQL outbox. A worker killed mid-step leaves its rows ``inflight``; their lease runs out
and another step claims them again (idempotent writes make the re-send harmless).

``HUB_SYNC_CRASH_AFTER=N`` (tests only) kills the process with SIGKILL right after the N-th
successful delivery answer and before its outcome is recorded: the window the crash tests need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterable

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from hub.store import delivery, heartbeats
from hub.store.db import utcnow
from hub.sync.config import DestinationsFile
from hub.sync.policy import Attempt, Verdict, to_result
from hub.sync.senders import Sender, build_sender
from hub.telemetry import Telemetry

log = logging.getLogger("hub.sync")
# httpx logs every request at INFO with its URL (resource ids, identifier searches): at sync
# rates that floods the log and leaks identifiers into it. Outcomes are logged here, as counts.
logging.getLogger("httpx").setLevel(logging.WARNING)
_NO_OUTCOME = Attempt(Verdict.RETRY, "no outcome reported")


class SyncWorker:
    """Drains the outbox for the configured destinations (see module docstring)."""

    def __init__(self, engine: Engine, config: DestinationsFile, *, lease_secs: float = 300.0,
                 poll_secs: float = 0.2, senders: dict[str, Sender] | None = None,
                 telemetry: Telemetry | None = None, heartbeat_secs: float = 2.0) -> None:
        self.engine = engine
        self.worker_id = str(uuid.uuid4())
        self.heartbeat_secs = heartbeat_secs
        self.telemetry = telemetry or Telemetry.disabled()
        self.config = config
        self.lease_secs = lease_secs
        self.poll_secs = poll_secs
        self.senders: dict[str, Sender] = dict(senders or {})
        for dest in config.enabled:
            if dest.name not in self.senders:
                self.senders[dest.name] = build_sender(config, dest.name)
        # SQLite has one writer: lanes of this process that collide get SQLITE_BUSY and sleep in
        # SQLite's busy handler (1 ms growing to 100 ms). Taking turns on a lock here instead
        # keeps claims and finishes back to back (measured: +40 % resources/s with 3 lanes).
        self._db_turn: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext())
        self._crash_after = int(os.environ.get("HUB_SYNC_CRASH_AFTER", "0") or 0)
        self._ok_answers = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        for sender in self.senders.values():
            sender.close()

    def step(self, name: str, stop: threading.Event | None = None) -> int:
        """One claim → deliver → record for destination ``name``; returns rows claimed."""
        sender = self.senders[name]
        limits = sender.limits
        with self._db_turn:
            items = delivery.claim(self.engine, name, limits.bundle_size or 100,
                                   lease_secs=self.lease_secs,
                                   patient_cap=limits.patient_entries_per_bundle)
        if not items:
            sender.breaker.cancel_probe()
            return 0
        # One span per step (a Bundle's worth of rows); destination name and counts only.
        with self.telemetry.span("deliver", destination=name, batch=len(items)) as span:
            attempts = sender.deliver(items, stop)
            self._maybe_crash(attempts.values())
            now = utcnow()
            results = [to_result(item, attempts.get(item.id, _NO_OUTCOME), limits, now)
                       for item in items]
            with self._db_turn:
                delivery.finish(self.engine, name, results)
            tally: dict[str, int] = {}
            for r in results:
                tally[r.status] = tally.get(r.status, 0) + 1
            self.telemetry.annotate(span, delivered=tally.get("delivered", 0),
                                    retried=tally.get("pending", 0), dead=tally.get("dead", 0),
                                    skipped=tally.get("skipped", 0))
        self.telemetry.count_deliveries(name, tally)
        log.debug("destination %s: %s", name, tally)  # counts only: no resource content
        return len(items)

    def _maybe_crash(self, attempts: Iterable[Attempt]) -> None:
        if not self._crash_after:
            return
        if any(a.verdict is Verdict.OK and not a.skipped for a in attempts):
            with self._lock:
                self._ok_answers += 1
                if self._ok_answers >= self._crash_after:
                    os.kill(os.getpid(), signal.SIGKILL)

    def lane(self, name: str, stop: threading.Event) -> None:
        """Loop ``step`` until ``stop``; honours the circuit, idles when nothing is due."""
        sender = self.senders[name]
        backoff = self.poll_secs
        while not stop.is_set():
            if not sender.breaker.allow():
                stop.wait(min(sender.breaker.wait_hint(), 1.0))
                continue
            try:
                claimed = self.step(name, stop)
                backoff = self.poll_secs
            except OperationalError as exc:
                sender.breaker.cancel_probe()
                log.warning("sync %s: database unavailable (%s); retrying", name,
                            type(exc.orig).__name__)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception as exc:
                sender.breaker.cancel_probe()
                # Type only: an exception's text may quote resource content.
                log.error("sync %s: step failed (%s); retrying", name, type(exc).__name__)
                stop.wait(1.0)
                continue
            if claimed == 0:
                stop.wait(self.poll_secs)

    def heartbeat(self, names: Iterable[str]) -> dict[str, int]:
        """Record this worker as serving ``names`` and pace each at 1 / live workers of its
        limits (see :mod:`hub.store.heartbeats`); returns the live counts."""
        live = heartbeats.beat(self.engine, self.worker_id, names,
                               ttl=self.heartbeat_secs * 3)
        for name, n in live.items():
            self.senders[name].pacer.set_workers(n)
        return live

    def _beat(self, names: list[str]) -> None:
        try:
            self.heartbeat(names)
        except OperationalError as exc:  # keep the last share; the lanes report the outage
            log.warning("sync heartbeat: database unavailable (%s)", type(exc.orig).__name__)

    def _beat_until(self, stop: threading.Event, names: list[str]) -> None:
        while not stop.wait(self.heartbeat_secs):
            self._beat(names)
        with contextlib.suppress(OperationalError):  # else its rows stop counting after the ttl
            heartbeats.forget(self.engine, self.worker_id)

    def run(self, stop: threading.Event, names: Iterable[str] | None = None) -> None:
        """Run every lane of every (or the named) destination until ``stop`` is set, sharing
        each destination's rate limits with the other live sync workers."""
        chosen = list(names) if names is not None else list(self.senders)
        self._beat(chosen)  # before the first request: a newcomer starts at its share
        beating = threading.Thread(target=self._beat_until, args=(stop, chosen), daemon=True,
                                   name="hub-sync-heartbeat")
        beating.start()
        threads = [beating]
        for name in chosen:
            for n in range(self.senders[name].limits.concurrency):
                thread = threading.Thread(target=self.lane, args=(name, stop), daemon=True,
                                          name=f"hub-sync-{name}-{n}")
                thread.start()
                threads.append(thread)
        log.info("sync started: %s", ", ".join(f"{n} x{self.senders[n].limits.concurrency}"
                                                for n in chosen) or "no destinations")
        for thread in threads:
            thread.join()
        self.close()

    def drain(self, name: str, *, max_steps: int = 10_000) -> int:
        """Step until nothing is due now (tests, CLI ``--once``); returns rows claimed."""
        total = 0
        for _ in range(max_steps):
            claimed = self.step(name)
            if claimed == 0:
                return total
            total += claimed
        return total

    def preview(self, name: str, limit: int) -> dict[str, object]:
        """Dry run: what the next ``limit`` open rows would be sent as. Nothing is sent."""
        items = delivery.pending_preview(self.engine, name, limit)
        return self.senders[name].preview(items)
