"""What every SQLite connection of the hub runs with: the durability and layout it promises."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from hub.store.db import SQLITE_PAGE_SIZE, make_engine, upgrade


def _pragma(url: str, name: str) -> object:
    engine = make_engine(url)
    with engine.connect() as conn:
        value = conn.execute(text(f"PRAGMA {name}")).scalar()
    engine.dispose()
    return value


def test_a_new_database_is_wal_fsynced_on_every_commit_with_the_hubs_page_size(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    assert _pragma(url, "journal_mode") == "wal"
    assert _pragma(url, "synchronous") == 2  # FULL: an acknowledged message survives power loss
    assert _pragma(url, "page_size") == SQLITE_PAGE_SIZE == 8192


def test_an_existing_database_keeps_its_page_size(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("PRAGMA page_size=32768")
        old.execute("CREATE TABLE t (x)")
    assert _pragma(f"sqlite:///{path}", "page_size") == 32768
