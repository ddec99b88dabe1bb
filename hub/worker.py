"""The worker loop: drains the inbox through the pipeline until told to stop."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from hub.mappings.live import LiveMappings
from hub.pipeline import Pipeline

log = logging.getLogger("hub.worker")


def drain(pipeline: Pipeline, engine: Engine, batch: int) -> int:
    """Process until the inbox has nothing received; returns the number of messages processed."""
    total = 0
    while True:
        done = pipeline.run_batch(engine, batch)
        total += done
        if done == 0:
            return total


def run_worker(
    pipeline: Pipeline,
    engine: Engine,
    stop: threading.Event,
    *,
    batch: int,
    poll_secs: float,
    mappings: LiveMappings | None = None,
    reload_secs: float = 2.0,
    rules_secs: float = 15.0,
) -> int:
    """Loop: claim a batch, process, repeat; sleep ``poll_secs`` when idle; stop on ``stop``.

    A database error (server restarting, lock timeout) backs off and retries: the claimed batch
    rolled back, so nothing is lost. Returns, and logs (a count, nothing else), how many messages
    this loop committed: how several workers shared a backlog is visible per process.
    """
    next_reload = time.monotonic() + reload_secs
    next_rules = time.monotonic()
    backoff = poll_secs
    total = 0
    while not stop.is_set():
        if mappings is not None and time.monotonic() >= next_reload:
            mappings.refresh()
            next_reload = time.monotonic() + reload_secs
        try:
            if time.monotonic() >= next_rules:
                # Time-based rules (missed doses, silence, daily summaries) are due by the clock,
                # not by a message: run what is due, with edited rule files reloaded first.
                pipeline.rules.refresh()
                pipeline.rules.tick(engine, route=pipeline.router.route)
                next_rules = time.monotonic() + rules_secs
            done = pipeline.run_batch(engine, batch)
            total += done
            backoff = poll_secs
        except OperationalError as exc:
            log.warning("database unavailable (%s); retrying", type(exc.orig).__name__)
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        if done == 0:
            stop.wait(poll_secs)
    log.info("worker loop stopped; %d messages processed", total)
    return total
