"""Taking a batch off a channel's queue for one group commit (the MQTT and HL7v2 writers)."""

from __future__ import annotations

import queue
import time
from typing import TypeVar

T = TypeVar("T")


def take_batch(source: queue.SimpleQueue[T | None], first: T, most: int, *,
               expect: int = 1, linger: float = 0.0) -> tuple[list[T], bool]:
    """``first`` and what else is queued, up to ``most`` items, and whether the stop mark
    (``None``) was taken (the caller commits the batch, then stops).

    Until ``expect`` items are in hand it waits up to ``linger`` seconds from the call for more;
    after that it takes only what is already queued. Nothing queued after the stop mark is taken.
    """
    batch = [first]
    deadline = time.monotonic() + linger
    while len(batch) < most:
        try:
            timeout = deadline - time.monotonic() if len(batch) < expect else 0.0
            item = source.get(timeout=timeout) if timeout > 0 else source.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False
