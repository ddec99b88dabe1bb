"""Inbound message ids are UUIDv7: time-ordered, so the indexes keyed by them grow at one end."""

from __future__ import annotations

import time
import uuid

from hub.runtime import Hub
from hub.store import inbox
from hub.store.db import write_tx


def test_a_message_id_is_a_uuid7() -> None:
    made = uuid.UUID(inbox.new_message_id())
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    # its first 48 bits are the Unix time in milliseconds (RFC 9562 section 5.7)
    assert abs((made.int >> 80) - time.time() * 1000) < 5_000


def test_later_ids_sort_after_earlier_ones_as_text() -> None:
    earlier = [inbox.new_message_id() for _ in range(50)]
    time.sleep(0.002)  # the next millisecond
    later = [inbox.new_message_id() for _ in range(50)]
    assert max(earlier) < min(later)
    assert len(set(earlier + later)) == 100


def test_stored_messages_get_uuid7_ids(hub: Hub) -> None:
    received = [inbox.receive(hub.engine, source="hub", channel="http",
                              content_type="application/json", body=b'{"n": %d}' % n).message_id
                for n in range(3)]
    row = {"source": "hub", "channel": "http", "content_type": "application/json",
           "body": b"{}", "status": inbox.STATUS_RECEIVED, "error": None, "client": None,
           "reply": None, "traceparent": None, "meta": None}
    with write_tx(hub.engine) as conn:
        inbox.insert_many(conn, [row])  # the group-commit channels' path (MLLP, MQTT, imports)
    ids = [*received, row["id"]]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert all(inbox.get(hub.engine, i) is not None for i in ids)
