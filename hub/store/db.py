"""Engine creation, durability settings and migrations for SQLite and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` by default: every commit is fsynced, so a
message the hub acknowledged survives power loss, not only a process crash. ``NORMAL`` (settable)
is faster but "a transaction committed in WAL mode with synchronous=NORMAL might roll back
following a power loss or system crash" (sqlite.org/pragma.html#pragma_synchronous).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import create_engine

from hub.errors import ConfigurationError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything the store writes is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


# The page size is chosen for a database that has grown, not for an empty one. Two of the
# resource table's indexes have random keys (the ids, message_id), so once an index has more
# pages than a commit has rows, a commit rewrites about one whole page per row and index.
# Measured with sqlite3 alone on this schema (1 KB rows, WAL, synchronous=FULL, the cache below;
# CPU per row of the insert and commit, median of 5): on a 1,000,000-row table, commits of 2,048
# rows (512 HL7v2 messages) 4 KiB 38.5 µs, 8 KiB 33.4, 16 KiB 48.9, 32 KiB 65.3; of 10,000 rows
# 32.8, 31.5, 37.8, 45.4 µs (docs/performance.md, "the page size on a large database"). On a
# fresh database 32 KiB was a little cheaper (bench.phases commit 11.1 vs 12.3 µs a reading), and
# end to end the two were within run-to-run noise (make bench 35,423-35,590 vs 36,626-36,705
# readings/s; bench.hl7_mllp 3,108-3,247 vs 2,901-3,156 msg/s, the MLLP listener's small commits
# ~10 µs a message cheaper with 8 KiB). Before, 32 KiB was chosen on a fresh database alone (4 KiB
# 44.7 µs a row, 16 KiB 31.5, 32 KiB 27.7, 64 KiB 26.8, commits of 10,000 rows, older code).
# It applies when a database is created; an existing one keeps its page size until VACUUM.
SQLITE_PAGE_SIZE = 8192
# SQLite's default cache (2 MB) could not hold the pages a 10,000-row commit dirties: it spilled
# them to the WAL mid-transaction and read evicted index pages back (py-spy: pwrite/pread 47 %
# of the committing worker). 64 MiB: 49.5 → 39.9 µs a row (4 KiB pages, commits of 10,000 rows).
SQLITE_CACHE_KIB = 65536


def bind_as_is() -> None:
    """Have Python's ``sqlite3`` bind ``bytes`` and ``None`` without its adapter search.

    It binds int, float, str and bytearray directly, but for any other value (``bytes``, ``None``)
    it looks for an adapter: a registry miss, then ``__adapt__`` on the protocol (an
    AttributeError raised and cleared in C) and ``__conform__`` on the value. Registered
    adapters are found at the first lookup: ``bytes`` (returns the very object it is given) and
    ``{}.get`` (returns None for None), both C callables, so what is bound is unchanged.
    Measured (cachegrind, executemany of 64-row batches of 1 str, 1 900-byte bytes, 4 None, 1 str):
    29.1k -> 18.9k instructions a row. Inbox rows carry a body and several NULLs; resource rows
    often a NULL subject or category. Registering is process-wide and idempotent; these types are
    not among those whose adaptation would slow every bind (int, float, str, bytearray).
    """
    sqlite3.register_adapter(bytes, bytes)
    sqlite3.register_adapter(type(None), cast(Callable[[None], None], {}.get))


def make_engine(url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> Engine:
    """An engine with the hub's durability settings applied to every connection."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        bind_as_is()
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False,
                                                             "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own
            # transaction handling cannot do BEGIN IMMEDIATE).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # (a new database only)
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Writers take the write lock up front: a deferred transaction that reads and then
            # writes fails at once with SQLITE_BUSY when another writer got in between. Readers
            # stay deferred so WAL lets them run beside writers.
            if conn.get_execution_options().get("hub_write", False):
                begin_immediate(conn.connection.dbapi_connection)
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True)
    raise ConfigurationError(f"unsupported database URL scheme '{parsed.get_backend_name()}'; "
                             "use sqlite:///path or postgresql+psycopg://...")


SQLITE_LOCK_WAIT_SECS = 30.0
SQLITE_LOCK_POLL_SECS = (0.001, 0.004)  # first and longest pause; the longest stays below a
# busy writer's gap between transactions (WriterGap, SQLITE_WRITER_GAP_SECS), so a waiting
# writer cannot miss it
SQLITE_WRITER_GAP_SECS = 0.005


def begin_immediate(dbapi_conn: Any) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock by polling every 1-4 ms.

    SQLite's own busy handler sleeps between retries with a back-off that grows to 100 ms, so a
    writer queued behind the worker (which commits a batch and takes the lock again at once) only
    got in when one of its sparse wake-ups hit the gap between two batches: POSTs waited through
    several batches (measured in bench.ingest: POST p99 1.8-2.6 s behind 0.25 s batches).
    Polling at most 4 ms apart finds the lock inside the 5 ms gap a busy writer leaves between
    its transactions (``WriterGap``), and costs a waiting thread ~250 tries a second.
    Statements inside the transaction keep the normal 30 s busy timeout.
    """
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + SQLITE_LOCK_WAIT_SECS
        pause, longest = SQLITE_LOCK_POLL_SECS
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, longest)
    finally:
        dbapi_conn.execute("PRAGMA busy_timeout=30000")


class WriterGap:
    """Leaves SQLite's write lock free for at least ``secs`` between one busy writer's
    transactions (``write_tx(engine, gap)``), so that other writers, polling for the lock at
    most 4 ms apart (``begin_immediate``), get it.

    A writer that commits back to back (the worker committing what its preparing processes
    hand it) re-took the lock within microseconds of committing and starved the intake (bench
    POST p99 2.0-3.9 s, 0.64-0.72 s with a 5 ms gap). A writer whose own work between two
    transactions already takes that long (the worker preparing a batch of HL7v2 messages
    without the lock: ~20 ms) waits nothing: the gap it used to add after every batch cost
    HL7v2 end to end 15-30 % (bench.hl7_mllp, 1,503-1,633 msg/s against 1,709-2,191).
    """

    def __init__(self, secs: float) -> None:
        self.secs = secs
        self._last = float("-inf")

    def wait(self) -> None:
        pause = self._last + self.secs - time.monotonic()
        if pause > 0:
            time.sleep(pause)

    def ended(self) -> None:
        self._last = time.monotonic()


def writer_gap(engine: Engine) -> WriterGap:
    """The gap a busy writer leaves on this engine: none on PostgreSQL (row locks)."""
    return WriterGap(SQLITE_WRITER_GAP_SECS if engine.dialect.name == "sqlite" else 0.0)


@contextmanager
def write_tx(engine: Engine, gap: WriterGap | None = None) -> Iterator[Connection]:
    """A write transaction: on SQLite it holds the database write lock from its first statement.
    With ``gap``, it starts no sooner than ``gap.secs`` after the last one that used it ended."""
    if gap is not None:
        gap.wait()
    try:
        with engine.connect() as conn:
            conn.execution_options(hub_write=True)
            with conn.begin():
                yield conn
    finally:
        if gap is not None:
            gap.ended()


def is_transient(error: BaseException, engine: Engine) -> bool:
    """A database error the work itself is not at fault for — chosen as a deadlock victim,
    serialization failure, lock timeout, lost connection: roll back and do the same work again.

    SQLAlchemy wraps driver errors in its ``OperationalError``; code that drives the DBAPI cursor
    directly (the rules store) raises the driver's own ``OperationalError`` (psycopg's
    ``DeadlockDetected`` and ``SerializationFailure`` are subclasses).
    """
    driver_error: type[BaseException] = engine.dialect.loaded_dbapi.OperationalError
    return isinstance(error, OperationalError | driver_error)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations (``hub db upgrade``); safe to run repeatedly."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url)  # a new database gets its page size and WAL mode first
        engine.connect().close()
        engine.dispose()
    command.upgrade(alembic_config(url), revision)
