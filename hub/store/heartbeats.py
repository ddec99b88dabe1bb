"""Live sync workers per destination, so several processes share one destination's rate limit.

A destination's limits (requests/s, entries/s: a HealthLake data store's quota, an EHR's agreed
pace) hold for the destination, not per process. Each sync worker records itself here every few
seconds for the destinations it serves and paces at ``1 / live workers`` of the configured rate.
A worker that stops beating (killed) stops counting after ``ttl`` and its row is purged later;
one that exits cleanly removes its rows at once. Between a start or stop and the next beat the
sum may be off by one worker's share for one interval: the destination's 429 handling (pause and
slow down) covers that window.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine

from hub.store.db import utcnow, write_tx
from hub.store.dialect import insert_for
from hub.store.models import SyncHeartbeat

_TABLE = SyncHeartbeat.__table__  # type: ignore[attr-defined]
_PURGE_AFTER = 10  # ttls: rows of workers this long gone are deleted


def beat(engine: Engine, worker_id: str, destinations: Iterable[str], *, ttl: float,
         now: datetime | None = None) -> dict[str, int]:
    """Record ``worker_id`` as alive for ``destinations``; returns, per destination, how many
    workers (this one included) beat within the last ``ttl`` seconds."""
    now = now or utcnow()
    names = sorted(set(destinations))
    if not names:
        return {}
    with write_tx(engine) as conn:
        stmt = insert_for(conn, _TABLE)
        stmt = stmt.on_conflict_do_update(index_elements=["worker_id", "destination"],
                                          set_={"seen_at": stmt.excluded.seen_at})
        conn.execute(stmt, [{"worker_id": worker_id, "destination": d, "seen_at": now}
                            for d in names])
        conn.execute(delete(_TABLE).where(
            _TABLE.c.seen_at < now - timedelta(seconds=ttl * _PURGE_AFTER)))
        live = conn.execute(
            select(_TABLE.c.destination, func.count())
            .where(_TABLE.c.destination.in_(names),
                   _TABLE.c.seen_at >= now - timedelta(seconds=ttl))
            .group_by(_TABLE.c.destination)).all()
    counts = {d: 1 for d in names}
    counts.update({d: max(1, int(n)) for d, n in live})
    return counts


def forget(engine: Engine, worker_id: str) -> None:
    """A worker stopping cleanly: the others take its share at their next beat."""
    with write_tx(engine) as conn:
        conn.execute(delete(_TABLE).where(_TABLE.c.worker_id == worker_id))
