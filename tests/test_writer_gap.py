"""A busy SQLite writer leaves the write lock free between its transactions (WriterGap)."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from hub.store.db import WriterGap, make_engine, write_tx


def _writes_in_order(tmp_path: Path, gap: WriterGap | None) -> list[str]:
    """Writer A commits twice back to back; writer B asks for the lock while A's first
    transaction holds it. Returns who wrote, in commit order."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gap.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE w (who TEXT)"))
    a_holds = threading.Event()

    def writer_b() -> None:
        a_holds.wait()
        with write_tx(engine) as conn:
            conn.execute(text("INSERT INTO w VALUES ('B')"))

    b = threading.Thread(target=writer_b)
    b.start()
    with write_tx(engine, gap) as conn:
        conn.execute(text("INSERT INTO w VALUES ('A1')"))
        a_holds.set()
        threading.Event().wait(0.1)  # B is polling for the lock by now
    with write_tx(engine, gap) as conn:
        conn.execute(text("INSERT INTO w VALUES ('A2')"))
    b.join(10)
    with engine.connect() as conn:
        order = [row[0] for row in conn.execute(text("SELECT who FROM w ORDER BY rowid"))]
    engine.dispose()
    return order


def test_a_waiting_writer_gets_the_lock_between_a_busy_writers_transactions(
        tmp_path: Path) -> None:
    # The gap is far longer than a waiting writer's longest pause between tries (4 ms), so the
    # outcome does not hang on the scheduler; the worker's is 5 ms.
    assert _writes_in_order(tmp_path, WriterGap(0.5)) == ["A1", "B", "A2"]

