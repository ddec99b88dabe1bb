"""Request-rate limits per API key: over its limit a client gets 429 with ``Retry-After``.

One vendor's burst (a gateway replaying a day of backlog, a retry loop gone wrong) must not take
the hub's capacity from every other client (OWASP API Security 2023, API4 "Unrestricted Resource
Consumption": rate-limit per key, not per IP). Each key has its own limit (``hub keys create
--rate-limit``, ``hub keys limit``) or the process default ``HUB_RATE_LIMIT``; without either a
key is not limited. Limits use the ``limits`` library's notation and moving-window counting
(``limits`` is what Flask-Limiter and slowapi are built on); the counts live in
``HUB_RATE_LIMIT_STORAGE``: ``memory://`` counts per process, ``redis://host:port`` gives every
``hub serve`` process one shared count per key.

A throttled request is refused before its body is read: nothing is stored, and the client is
told when to try again (a sender retrying on 429 loses nothing). If the shared store cannot be
reached the request is let through and a warning logged: losing a count must not stop clinical
data from being accepted.
"""

from __future__ import annotations

import logging
import math
import time
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from hub.api.errors import ApiError
from hub.store.api_keys import Client

log = logging.getLogger("hub.api")


@lru_cache(maxsize=256)
def _items(text: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(text))


class RateLimits:
    """Counts each client's requests against its limit; ``check`` raises the 429."""

    def __init__(self, default: str | None, storage_uri: str = "memory://") -> None:
        self.default = default
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))

    def check(self, client: Client) -> None:
        """Count one request of ``client``; ApiError 429 (with Retry-After, in whole seconds,
        at least 1) if it is over any of its limits. Blocking I/O with a Redis store: call it
        from a worker thread."""
        text = client.rate_limit or self.default
        if not text:
            return
        try:
            over = self._over(text, client.name)
        except Exception as exc:  # the shared store is down: accept, say so (no client name)
            log.warning("rate-limit store unavailable (%s); request not counted",
                        type(exc).__name__)
            return
        if over is not None:
            item, wait = over
            raise ApiError(429, f"rate limit of {item} for this API key exceeded; retry after "
                                f"{wait} s", headers={"Retry-After": str(wait)})

    def _over(self, text: str, name: str) -> tuple[RateLimitItem, int] | None:
        """Count the request against each limit in ``text``; the first one it is over, and the
        whole seconds until that one has room."""
        for item in _items(text):
            if not self.limiter.hit(item, "api-key", name):
                reset = self.limiter.get_window_stats(item, "api-key", name).reset_time
                return item, max(1, math.ceil(reset - time.time()))
        return None
