"""The one place that knows SQLite and PostgreSQL spell upserts and parameters differently,
and how hot-path statements reach the driver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.types import TypeEngine

#: The DB-API parameter marker of each dialect (SQL written once with ``{m}``)
MARK = {"postgresql": "%s", "sqlite": "?"}


def insert_for(conn: Connection, table: Table) -> Any:
    """``INSERT`` supporting ``on_conflict_do_*`` on the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@contextmanager
def driver_cursor(conn: Connection, what: str) -> Iterator[Any]:
    """The transaction's DBAPI cursor, for per-message statements whose Core construction,
    compilation and dispatch cost more than running them (measured where used). A driver error
    comes out as SQLAlchemy's own class (OperationalError for a deadlock victim or a lost
    connection), as from any other statement, and without parameters in its text (they hold
    identifiers). Like a Core statement, it begins the connection's transaction if none is
    (the driver's statement alone would not: on SQLite, where the hub issues BEGIN itself, it
    would run and commit outside any transaction, and a later rollback would not undo it)."""
    if not conn.in_transaction():
        conn.begin()
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, what, exc) from exc
    finally:
        cursor.close()


class DriverSavepoint:
    """A savepoint set on the transaction's cursor; ``commit()`` releases it, ``rollback()``
    undoes what was done since, and one of them must be called.

    SQLAlchemy's ``begin_nested`` (a Core statement per step, each savepoint named anew) cost
    152 us a savepoint (SQLite, timeit, best of 5), and the worker sets one per run of
    prepared messages: ~20 us a message in batches of 8. The statements here are a few us."""

    def __init__(self, conn: Connection, name: str = "hub_run") -> None:
        self.conn, self.name = conn, name
        self._run(f"SAVEPOINT {name}")

    def _run(self, *statements: str) -> None:
        with driver_cursor(self.conn, "savepoint") as cursor:
            for statement in statements:
                cursor.execute(statement)

    def commit(self) -> None:
        self._run(f"RELEASE SAVEPOINT {self.name}")

    def rollback(self) -> None:
        self._run(f"ROLLBACK TO SAVEPOINT {self.name}", f"RELEASE SAVEPOINT {self.name}")


def driver_error(conn: Connection, what: str, exc: Exception) -> StatementError:
    """``exc`` from the driver as SQLAlchemy would have raised it, parameters hidden."""
    return DBAPIError.instance(what, None, exc, conn.dialect.loaded_dbapi.Error,
                               hide_parameters=True)


# SQLAlchemy's SQLite DATETIME storage format. Its processor fills the format from a dict of
# seven attributes made per value; the same format over a tuple is cheaper (timeit, per value,
# three runs: 1.9-2.8 µs → 1.1-2.0 µs; ``isoformat(" ")``, 2.4-3.5 µs, was no cheaper on this
# machine). ``tests/test_store_resources.py`` checks they agree.
SQLITE_DATETIME_FORMAT = ("%(year)04d-%(month)02d-%(day)02d "
                          "%(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d")


def sqlite_time(value: datetime | None) -> str | None:
    """A datetime as SQLAlchemy's SQLite DATETIME stores it."""
    if value is None:
        return None
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 (the cheaper one, above)
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond)


def time_writer(column_type: TypeEngine[Any], dialect: Dialect
                ) -> Callable[[datetime | None], Any]:
    """How a DateTime column of ``column_type`` stores a value on ``dialect``, for driver SQL:
    exactly what SQLAlchemy would bind, so rows read back through the models as before
    (SQLite: ``sqlite_time`` when the column has SQLAlchemy's default storage format)."""
    impl = column_type.dialect_impl(dialect)
    if (dialect.name == "sqlite"
            and getattr(impl, "_storage_format", None) == SQLITE_DATETIME_FORMAT):
        return sqlite_time
    process = impl.bind_processor(dialect)
    return process if process is not None else _same


def time_reader(column_type: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """A DateTime column's value as the driver returns it → what SQLAlchemy would return."""
    process = column_type.dialect_impl(dialect).result_processor(dialect, None)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value
