"""The Alembic migrations create exactly the tables the models declare, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from hub.store import models  # noqa: F401 - registers the tables
from hub.store.db import alembic_config, make_engine, normalize_url


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = create_engine(normalize_url(db_url))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


_LOINC, _MDC, _LOCAL = "http://loinc.org", "urn:iso:std:iso:11073:10101", "urn:example:local"
# (id, codings, the token rows revision 0012 wrote: every coding after the first with a code)
_STORED = [
    ("dual", [(_LOINC, "8867-4"), (_MDC, "149546")], [(_MDC, "149546")]),
    ("triple", [(_LOINC, "85354-9"), (_MDC, "150020"), (_LOCAL, "BP")],
     [(_MDC, "150020"), (_LOCAL, "BP")]),
    ("single", [(_LOINC, "8310-5")], []),
    ("uncoded-second", [(_LOINC, "29463-7"), (_MDC, None), (_LOCAL, "WT")], [(_LOCAL, "WT")]),
]


def _layout(engine: Engine) -> tuple[dict[str, tuple[str | None, str | None]],
                                     dict[str, set[str]]]:
    with engine.connect() as conn:
        tokens: dict[str, set[str]] = {}
        for res_id, code in conn.execute(text("SELECT res_id, code FROM resource_token")):
            tokens.setdefault(res_id, set()).add(code)
        columns = inspect(conn).get_columns("resource")
        if "second_code" not in {c["name"] for c in columns}:
            return {}, tokens
        seconds = {r[0]: (r[1], r[2]) for r in conn.execute(text(
            "SELECT res_id, second_code_system, second_code FROM resource"))}
    return seconds, tokens


def test_0013_moves_second_codings_from_tokens_into_the_row_and_back(db_url: str) -> None:
    """Rows written before 0013 get the layout the hub writes now (a rewrite of an unchanged
    resource redoes its tokens, not its row), and downgrade gives the tokens back."""
    config = alembic_config(db_url)
    command.downgrade(config, "0012")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for res_id, codings, tokens in _STORED:
                content = orjson.dumps({"resourceType": "Observation", "id": res_id, "code": {
                    "coding": [{"system": s, **({"code": c} if c else {})}
                               for s, c in codings]}}).decode()
                conn.execute(text(
                    "INSERT INTO resource (res_type, res_id, version_id, content_hash, "
                    "last_updated, content) VALUES ('Observation', :i, 1, 'h', :t, :c)"),
                    {"i": res_id, "t": datetime(2026, 11, 22, tzinfo=UTC), "c": content})
                for system, code in tokens:
                    conn.execute(text(
                        "INSERT INTO resource_token (res_type, res_id, param, system, code) "
                        "VALUES ('Observation', :i, 'code', :s, :c)"),
                        {"i": res_id, "s": system, "c": code})
        command.upgrade(config, "head")
        seconds, tokens = _layout(engine)
        assert seconds == {"dual": (_MDC, "149546"), "triple": (_MDC, "150020"),
                           "single": (None, None), "uncoded-second": (None, None)}
        assert tokens == {"triple": {"BP"}, "uncoded-second": {"WT"}}
        command.downgrade(config, "0012")
        assert _layout(engine) == ({}, {"dual": {"149546"}, "triple": {"150020", "BP"},
                                        "uncoded-second": {"WT"}})
    finally:
        engine.dispose()
        command.upgrade(config, "head")
