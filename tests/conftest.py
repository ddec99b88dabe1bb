"""Shared fixtures: every store-backed test runs on SQLite and on the real PostgreSQL server.

PostgreSQL tests use a database created for this test session on HUB_TEST_POSTGRES_URL
(default postgresql://postgres@127.0.0.1:5432/test). When the server is unreachable they fail
under CI (CI=true or HUB_REQUIRE_POSTGRES=1) and skip elsewhere, with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from hub.runtime import Hub
from hub.settings import Settings
from hub.store import api_keys
from hub.store.db import upgrade
from hub.telemetry import Telemetry

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
PG_ADMIN_URL = os.environ.get("HUB_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TEST_SECRET = "test-secret-not-for-production"

# Tests never assert timings (speed lives in bench/): Hypothesis's per-example deadline (200 ms)
# failed a tokenizer property on a loaded CI machine (one example took 453 ms, then 0.3 ms).
hypothesis_settings.register_profile("hub", deadline=None)
hypothesis_settings.load_profile("hub")


def _require_postgres() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("HUB_REQUIRE_POSTGRES"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session; dropped afterwards."""
    name = f"hub_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
        if _require_postgres():
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "hub.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


def _truncate(engine: Engine) -> None:
    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty, migrated database: once SQLite, once PostgreSQL."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        url: str = request.getfixturevalue("postgres_url")
    else:
        url = request.getfixturevalue("sqlite_url")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    _truncate(engine)
    engine.dispose()
    return url


def make_settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db_url, "env": "test", "secret_key": TEST_SECRET,
        "mappings_dir": REPO / "mappings", "inline_worker": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def hub(db_url: str) -> Iterator[Hub]:
    built = Hub.build(make_settings(db_url), Telemetry.disabled())
    yield built
    built.engine.dispose()


@pytest.fixture
def api_key(hub: Hub) -> str:
    """A key that may post to the canonical source ``hub``."""
    return api_keys.create(hub.engine, TEST_SECRET, "vendor-a", ["hub"])


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
