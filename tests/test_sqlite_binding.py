"""bind_as_is: bytes and None reach SQLite exactly as they would without the adapters."""

from __future__ import annotations

import sqlite3

import pytest

from hub.store.db import bind_as_is


@pytest.mark.parametrize("value", [b"", b"\x00\xff\x0b\x1c\x0d", bytes(range(256)) * 40])
def test_bytes_are_stored_as_the_same_blob(value: bytes) -> None:
    bind_as_is()
    assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is bytes
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (v)")
    con.executemany("INSERT INTO t VALUES (?)", [(value,), (value,)])
    assert con.execute("SELECT typeof(v), v FROM t").fetchall() == [("blob", value)] * 2


def test_none_is_stored_as_null() -> None:
    bind_as_is()
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (v, w)")
    con.execute("INSERT INTO t VALUES (?, ?)", (None, "x"))
    con.execute("INSERT INTO t VALUES (:v, :w)", {"v": None, "w": None})
    assert con.execute("SELECT typeof(v), v, typeof(w) FROM t").fetchall() == \
        [("null", None, "text"), ("null", None, "null")]
    # A NULL bound this way is a NULL to SQL: it matches IS NULL, not = NULL.
    assert con.execute("SELECT count(*) FROM t WHERE v IS NULL").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM t WHERE v = ?", (None,)).fetchone() == (0,)


def test_other_types_keep_binding_without_adaptation() -> None:
    bind_as_is()
    # int, float, str and bytearray must stay unadapted: an adapter for one of them makes
    # sqlite3 search adapters for every value it binds.
    assert not any(t in (int, float, str, bytearray) for t, _ in sqlite3.adapters)
