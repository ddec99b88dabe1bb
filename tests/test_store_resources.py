"""hub.store.resources: idempotent upserts and their search index, on both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from hub.runtime import Hub
from hub.store import resources
from hub.store.db import write_tx
from hub.store.models import Resource, ResourceToken

MDC = "urn:iso:std:iso:11073:10101"


def observation(second_code: str, value: int = 72) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "token-check", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"},
                                {"system": MDC, "code": second_code}]},
            "valueQuantity": {"value": value}}


def tokens(hub: Hub) -> set[str]:
    with hub.engine.connect() as conn:
        return set(conn.execute(select(ResourceToken.code)
                                .where(ResourceToken.res_id == "token-check")).scalars())


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
    assert tokens(hub) == {"147842"}
    with write_tx(hub.engine) as conn:
        written = resources.upsert(conn, [observation("149530", value=80)], None)
    assert [w.version_id for w in written] == [2]
    assert tokens(hub) == {"149530"}
