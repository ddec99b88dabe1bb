"""The one place that knows SQLite and PostgreSQL spell upserts and parameters differently,
and how hot-path statements reach the driver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError

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
    identifiers)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, what, exc) from exc
    finally:
        cursor.close()


def driver_error(conn: Connection, what: str, exc: Exception) -> StatementError:
    """``exc`` from the driver as SQLAlchemy would have raised it, parameters hidden."""
    return DBAPIError.instance(what, None, exc, conn.dialect.loaded_dbapi.Error,
                               hide_parameters=True)
