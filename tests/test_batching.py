"""take_batch: what a channel's group commit takes off its queue."""

from __future__ import annotations

import queue
import threading

from hub.channels.batching import take_batch


def _queue(*items: int | None) -> queue.SimpleQueue[int | None]:
    q: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    for item in items:
        q.put(item)
    return q


def test_takes_what_is_queued_up_to_the_most() -> None:
    q = _queue(2, 3, 4, 5)
    assert take_batch(q, 1, 3) == ([1, 2, 3], False)
    assert take_batch(q, q.get(), 3) == ([4, 5], False)  # type: ignore[arg-type]
    assert q.empty()


def test_the_stop_mark_ends_the_batch_and_nothing_after_it_is_taken() -> None:
    q = _queue(2, None, 3)
    assert take_batch(q, 1, 10) == ([1, 2], True)
    assert q.get_nowait() == 3


def test_without_linger_it_does_not_wait_for_the_expected_count() -> None:
    assert take_batch(_queue(), 1, 10, expect=4, linger=0.0) == ([1], False)


def test_it_waits_for_the_expected_count_within_the_linger() -> None:
    q = _queue()
    late = threading.Timer(0.05, q.put, args=(2,))
    late.start()
    try:
        # The linger (60 s) is far longer than the late item takes to come; the call returns
        # once it has the 2 it expects (then takes only what is already queued).
        assert take_batch(q, 1, 10, expect=2, linger=60.0) == ([1, 2], False)
    finally:
        late.cancel()
