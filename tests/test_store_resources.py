"""hub.store.resources: idempotent upserts and their search index, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from hub.runtime import Hub
from hub.store import resources
from hub.store.db import write_tx
from hub.store.models import Resource, ResourceToken

MDC = "urn:iso:std:iso:11073:10101"
LOCAL = "urn:example:local-codes"


def observation(second_code: str, value: int = 72) -> dict[str, Any]:
    """Three codings: the second is stored in the row (second_code), the third as a token."""
    return {"resourceType": "Observation", "id": "token-check", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"},
                                {"system": MDC, "code": second_code},
                                {"system": LOCAL, "code": f"L{second_code}"}]},
            "valueQuantity": {"value": value}}


def codes(second: str) -> set[str]:
    """What ``observation(second)`` is searchable by beyond its first coding."""
    return {second, f"L{second}"}


def tokens(hub: Hub, res_id: str = "token-check") -> set[str]:
    """The codes beyond the first a resource is stored searchable by: its second_code column
    and its resource_token rows."""
    with hub.engine.connect() as conn:
        found = set(conn.execute(select(ResourceToken.code)
                                 .where(ResourceToken.res_id == res_id)).scalars())
        second = conn.execute(select(Resource.second_code)
                              .where(Resource.res_id == res_id)).scalar_one_or_none()
    return found | ({second} if second else set())


def test_same_content_twice_is_one_version(hub: Hub) -> None:
    for _ in range(2):
        with write_tx(hub.engine) as conn:
            written = resources.upsert(conn, [observation("147842")], None)
    assert written == []  # the second write changed nothing, so nothing is to be delivered
    with hub.engine.connect() as conn:
        assert conn.execute(select(Resource.version_id)).scalar_one() == 1


def test_a_new_version_is_not_found_by_a_coding_it_dropped(hub: Hub) -> None:
    with write_tx(hub.engine) as conn:
        resources.upsert(conn, [observation("147842")], None)
    assert tokens(hub) == codes("147842")
    with write_tx(hub.engine) as conn:
        written = resources.upsert(conn, [observation("149530", value=80)], None)
    assert [w.version_id for w in written] == [2]
    assert tokens(hub) == codes("149530")


def write_unreturned(hub: Hub, resource: dict[str, Any], *others: dict[str, Any]
                     ) -> list[resources.Written]:
    """``resources.write`` as the worker's commit calls it when no destination is routed."""
    with write_tx(hub.engine) as conn:
        staged = resources.stage(conn.dialect, [resource, *others], None)
        return resources.write(conn, list(staged.rows.values()), staged.tokens,
                               unreported="Observation")


def test_without_the_changed_list_versions_and_tokens_are_the_same(hub: Hub) -> None:
    # new rows beside an existing one: the existing one's tokens are redone, not lost
    new = {**observation("147842"), "id": "token-new"}
    write_unreturned(hub, observation("147842"))
    assert tokens(hub) == codes("147842")
    write_unreturned(hub, observation("147842"), new)  # unchanged, and one new
    assert tokens(hub) == codes("147842")
    write_unreturned(hub, observation("149530", value=80))  # changed: its old codings go
    assert tokens(hub) == codes("149530")
    with hub.engine.connect() as conn:
        versions = dict(conn.execute(select(Resource.res_id, Resource.version_id)).all())
    assert versions == {"token-check": 2, "token-new": 1}
    assert tokens(hub, "token-new") == codes("147842")


def test_rows_of_other_types_are_still_reported(hub: Hub) -> None:
    # a prepared message's Patient beside its Observations: whether it changed is still told
    patient = {"resourceType": "Patient", "id": "p-1", "gender": "female"}
    first = write_unreturned(hub, observation("147842"), patient)
    assert [(w.res_type, w.res_id, w.version_id) for w in first
            if w.res_type == "Patient"] == [("Patient", "p-1", 1)]
    assert write_unreturned(hub, observation("147842"), patient) == []  # nothing changed
    changed = write_unreturned(hub, observation("147842"), {**patient, "gender": "male"})
    assert [(w.res_type, w.res_id, w.version_id) for w in changed
            if w.res_type == "Patient"] == [("Patient", "p-1", 2)]


@settings(max_examples=2000)
@given(st.datetimes(timezones=st.none() | st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])))
def test_sqlite_instants_are_written_as_sqlalchemy_writes_them(when: datetime) -> None:
    """The fast SQLite writer gives SQLAlchemy's DATETIME bind text, so rows read back as
    before."""
    dialect = sqlite.dialect()
    impl = Resource.__table__.c.effective.type.dialect_impl(dialect)
    reference = impl.bind_processor(dialect)
    writer = resources._instant_writer(dialect)
    assert writer is resources._sqlite_instant  # the fast path is the one taken
    assert writer(when) == reference(when)
    assert writer(None) is None


def _stored_effective(value: Any) -> str | None:
    parsed = resources._parse_instant(value)
    return None if parsed is None else resources._sqlite_instant(parsed)


_ODD_INSTANTS = ["2026-W01-1T00:00:05+00:00", "2026-02-30T00:00:05+00:00",
                 "2026-01-01T24:00:00+00:00", "2026-01-01T00:00:05,123456+00:00",
                 "2026-01-01X00:00:05+00:00", "2026-01-01 00:00:05+00:00",
                 "2026-01-01T00:00:05.123+00:00", "2026-01-01T00:00:05Z", "2026-01-01",
                 "2026-01-01T00:00:05-00:00", "20260101T000005+00:00", "", None, 17]


@settings(max_examples=2000)
@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]))
       | st.sampled_from(_ODD_INSTANTS))
def test_sqlite_effective_text_is_the_parsed_instant_written(when: Any) -> None:
    """An effective instant cut from its text (SQLite) is what parsing it and writing the
    datetime gives, for the text isoformat writes and for texts that only look like it."""
    texts = [when.isoformat(), when.isoformat(timespec="microseconds")] \
        if isinstance(when, datetime) else [when]
    for text in texts:
        assert resources._sqlite_effective(text) == _stored_effective(text)
