"""Prepare in other processes, commit in this one: ``hub worker --prepare-procs N``.

A worker's per-reading CPU work is mostly the prepare phase (decode, map, resolve, build, make
rows; see ``hub.pipeline``), which needs no lock. On SQLite one writer at a time does the
commits, so a worker doing both is bound to one core; here N processes prepare the next messages
while this one commits the last ones. Each preparing process builds its own hub (connectors,
mappings, a read-only database connection) from the same settings, and reads the bodies itself;
only message ids go out and rows come back.

The committer hands out received messages in inbox order and commits the results in the same
order, taking each message only if it is still received (``inbox.take``): another worker, or
the API's synchronous FHIR write, may have processed it meanwhile. Nothing is written outside
the committer's transactions, so a crash of any process loses and duplicates nothing: whatever
was not committed is still received. A preparing process that fails or dies costs its messages
nothing either: they are processed under the lock instead (and the pool is started again).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from hub.contracts import RawMessage
from hub.identity import IdentityResolver
from hub.pipeline import Pipeline
from hub.staging import Prepared
from hub.store import inbox
from hub.store.db import write_tx, writer_gap

log = logging.getLogger("hub.worker")

# What a preparing process needs: the pipeline, its engine, and how to reload edited mappings.
Preparer = tuple[Pipeline, Engine, Callable[[], object] | None]
_RELOAD_SECS = 2.0
# A task is consecutive messages of about this many body bytes (at least one): enough work
# (~2,000 canonical readings) that handing it over costs little, small enough to keep order.
TASK_BYTES = 256 * 1024
TASK_MESSAGES = 64


@dataclass
class _Child:
    pipeline: Pipeline
    engine: Engine
    reload: Callable[[], object] | None
    epoch: int = 0
    next_reload: float = 0.0


_child: _Child | None = None


def _start(factory: Callable[[], Preparer]) -> None:
    global _child
    _child = _Child(*factory())
    # The cyclic GC runs between tasks instead of during them: a task's objects are freed by
    # reference counting once its results are sent, and scans in the middle of a task found
    # them all alive. What the hub built at start is frozen out of the scans (as tune_gc
    # does for the import-time heap).
    gc.freeze()
    gc.disable()
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="orphan-watch",
                     daemon=True).start()


def _exit_with(parent: int) -> None:
    """End this process once its committer is gone (killed: it cannot say so). A pool's
    process otherwise waits on its task queue forever, since it holds both ends of the pipe."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _prepare(claims: list[RawMessage], epoch: int) -> list[Prepared]:
    """In a preparing process: read the bodies, prepare each message (in order)."""
    child = _child
    assert child is not None, "the pool's initializer did not run"
    gc.collect()  # cycles the previous task left, if any (its results are sent by now)
    if epoch != child.epoch:  # a merge moved bindings (registry epoch): those read are stale
        child.pipeline.staged_identities.clear()
        child.epoch = epoch
    if time.monotonic() >= child.next_reload:  # edited mappings and rules, as the worker does
        if child.reload is not None:
            child.reload()
        child.pipeline.rules.refresh()
        child.next_reload = time.monotonic() + _RELOAD_SECS
    with child.engine.connect() as conn:
        found = inbox.bodies(conn, [c.id for c in claims])
        out = []
        for raw in claims:
            raw.body = found.get(raw.id, b"")
            out.append(child.pipeline.prepare(conn, raw, epoch))
        conn.rollback()
    return out


@dataclass
class _Task:
    claims: list[RawMessage]
    future: Future[list[Prepared]]
    executor: ProcessPoolExecutor


class PreparePool:
    """N preparing processes (spawned: each imports the hub afresh) and the committer's side.

    ``factory`` (picklable: a module-level function, or a partial of one) runs once in each
    process and returns its ``Preparer``. ``rows_per_commit`` bounds a commit: more rows per
    transaction pay fewer fsyncs and rewrite fewer index pages, but on SQLite every other
    writer (POSTs) waits for the whole commit.
    """

    def __init__(self, pipeline: Pipeline, engine: Engine, procs: int,
                 factory: Callable[[], Preparer], *, rows_per_commit: int = 10_000,
                 tasks_per_proc: int = 2) -> None:
        self.pipeline = pipeline
        self.engine = engine
        self.procs = procs
        self.factory = factory
        self.rows_per_commit = rows_per_commit
        self.depth = procs * tasks_per_proc
        self.tasks: deque[_Task] = deque()
        self.held: set[str] = set()  # message ids handed out, not yet committed or dropped
        # This side commits back to back (the preparing is elsewhere): leave other writers a gap.
        self.gap = writer_gap(engine)
        self.executor = self._executor()

    def _executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.procs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=(self.factory,))

    def start(self) -> None:
        """Start every process now (each builds its hub: seconds), not at the first message."""
        for ready in [self.executor.submit(os.getpid) for _ in range(self.procs)]:
            ready.result()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.tasks.clear()
        self.held.clear()

    def fill(self) -> None:
        """Hand out received messages (oldest first, none twice) until ``depth`` tasks wait."""
        missing = self.depth - len(self.tasks)
        if missing <= 0:
            return
        with self.engine.connect() as conn:
            if self.pipeline.epoch < 0:
                # The registry epoch, not read yet (the first commit reads it): tasks prepared
                # under "unknown" would all be stale and processed under the lock instead.
                self.pipeline._follow_epoch(conn)
            claims = inbox.waiting(conn, missing * TASK_MESSAGES, skip=self.held)
            conn.rollback()
        task: list[RawMessage] = []
        size = 0
        for raw, body_size in claims:
            task.append(raw)
            size += body_size
            if size >= TASK_BYTES or len(task) >= TASK_MESSAGES:
                self._submit(task)
                task, size = [], 0
                if len(self.tasks) >= self.depth:
                    break
        if task:
            self._submit(task)

    def _submit(self, claims: list[RawMessage]) -> None:
        self.held.update(raw.id for raw in claims)
        future = self.executor.submit(_prepare, claims, self.pipeline.epoch)
        self.tasks.append(_Task(claims, future, self.executor))

    def _results(self, task: _Task) -> list[Prepared]:
        try:
            return task.future.result()
        except BrokenProcessPool:
            if task.executor is self.executor:
                log.warning("a preparing process died; starting the pool again")
                self._restart()
        except Exception as exc:  # a bug in preparing: the lock path records it per message
            log.warning("preparing %d messages failed (%s); processing them under the lock",
                        len(task.claims), type(exc).__name__)
        return [Prepared(raw.id, raw.source, raw.traceparent, -1, fallback="preparing failed")
                for raw in task.claims]

    def _restart(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._executor()

    def step(self, wait: float) -> int:
        """Keep the pool busy, then commit what is ready in order (waiting up to ``wait``
        seconds for the oldest task); returns how many messages were processed."""
        self.fill()
        if not self.tasks:
            return 0
        head = self.tasks[0].future
        if not head.done():
            try:
                head.exception(timeout=wait)
            except TimeoutError:
                return 0
        batch: list[Prepared] = []
        rows = 0
        while self.tasks and (not batch or self.tasks[0].future.done()):
            task = self.tasks.popleft()
            for p in self._results(task):
                batch.append(p)
                rows += len(p.staged.rows)
            if rows >= self.rows_per_commit:
                break
        try:
            return self._commit(batch)
        finally:
            self.held.difference_update(p.message_id for p in batch)
            self.fill()

    def _commit(self, batch: list[Prepared]) -> int:
        resolver = IdentityResolver(self.pipeline.identity_cache)
        try:
            with write_tx(self.engine, self.gap) as conn:
                taken = inbox.take(conn, [p.message_id for p in batch])

                def raw_of(message_id: str) -> RawMessage:
                    return inbox.claim(conn, 1, [message_id], lock=False)[0]

                outcomes = self.pipeline.commit(
                    conn, [p for p in batch if p.message_id in taken], raw_of, resolver)
        except BaseException:
            resolver.rolled_back()
            raise
        resolver.committed()
        for source, status in outcomes:
            self.pipeline.telemetry.count_outcome(source, status)
        return len(outcomes)
