"""A claim reads bodies up to a byte budget: a backlog of large bodies is not read at once."""

from __future__ import annotations

from hub.runtime import Hub
from hub.store import inbox


def _receive(hub: Hub, sizes: list[int]) -> list[str]:
    return [inbox.receive(hub.engine, source="hub", channel="http",
                          content_type="application/json",
                          body=b'{"n": %d, "pad": "%s"}' % (i, b"x" * size)).message_id
            for i, size in enumerate(sizes)]


def test_a_claim_stops_at_the_byte_budget_oldest_first(hub: Hub) -> None:
    ids = _receive(hub, [1000, 1000, 1000, 1000])
    with hub.engine.connect() as conn:
        claimed = inbox.claim(conn, 10, lock=False, max_bytes=2500)
        conn.rollback()
    assert [raw.id for raw in claimed] == ids[:2]
    assert [raw.body for raw in claimed] == [b'{"n": %d, "pad": "%s"}' % (i, b"x" * 1000)
                                             for i in range(2)]


def test_one_message_is_claimed_whatever_its_size(hub: Hub) -> None:
    ids = _receive(hub, [5000, 10])
    with hub.engine.connect() as conn:
        claimed = inbox.claim(conn, 10, lock=False, max_bytes=100)
        conn.rollback()
    assert [raw.id for raw in claimed] == ids[:1]
    assert len(claimed[0].body) > 5000


def test_the_count_limit_still_applies_within_the_budget(hub: Hub) -> None:
    ids = _receive(hub, [10, 10, 10])
    with hub.engine.connect() as conn:
        claimed = inbox.claim(conn, 2, lock=False)
        conn.rollback()
    assert [raw.id for raw in claimed] == ids[:2]
