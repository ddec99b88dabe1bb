"""Delivery policy: how an answer is classified, when to retry, how fast to go, when to stop.

* Classification of HTTP answers (:func:`classify`): 2xx ok; 429 throttled; 408/5xx (but 501),
  timeouts and resets retried; 409/412 conflict (re-read, retry at most twice); 413 too large
  (split); 401 re-authenticate once; 401/403 (and 3xx: redirects are not followed) to a whole
  request are a configuration or credentials problem, retried behind the circuit (a 403 on one
  batch entry is that resource's refusal); other 4xx refused for good (dead-letter with the
  answer).
* Backoff (:func:`backoff_secs`): tenacity's exponential wait with jitter,
  ``min(2^n + random, cap)`` — Google's published formula, cap 64 s by default — and never
  earlier than a ``Retry-After``. Past the destination's deadline an item is dead-lettered.
* Pace (:class:`Pacer`): token buckets for requests/s and entries/s (a transaction entry may cost
  twice, as on HealthLake). A throttled answer pauses the whole destination for its Retry-After
  and lowers the rate multiplicatively; successes restore it additively (AIMD), so a throttled
  destination slows down instead of being stormed by every lane.
* Circuit (:class:`CircuitBreaker`): opens after N consecutive failed requests, lets one probe
  through after the cool-down, closes on its success.
"""

from __future__ import annotations

import email.utils
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tenacity import RetryCallState, wait_exponential_jitter

from hub.store.delivery import DEAD, DELIVERED, PENDING, SKIPPED, Claimed, Result
from hub.sync.config import Limits


class Verdict(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    THROTTLED = "throttled"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    AUTH = "auth"
    FATAL = "fatal"


def classify(status: int) -> Verdict:
    """What an HTTP status means for delivery (see module docstring)."""
    if 200 <= status < 300:
        return Verdict.OK
    if status == 429:
        return Verdict.THROTTLED
    if status == 408 or (status >= 500 and status != 501):
        return Verdict.RETRY
    if 300 <= status < 400:
        return Verdict.AUTH  # a redirect: the base URL or credentials need fixing, not the data
    if status in (409, 412):
        return Verdict.CONFLICT
    if status == 413:
        return Verdict.TOO_LARGE
    if status in (401, 403):
        return Verdict.AUTH
    return Verdict.FATAL


def retry_after_secs(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date; None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def backoff_secs(attempt: int, cap: float) -> float:
    """Exponential backoff with jitter for the ``attempt``-th failure (1-based), via tenacity."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return float(wait_exponential_jitter(initial=1, max=cap, jitter=1)(state))


@dataclass(slots=True)
class Attempt:
    """What happened to one item in one delivery attempt."""

    verdict: Verdict
    reason: str | None = None
    detail: dict[str, Any] | None = None
    retry_after: float | None = None
    skipped: bool = False


OK = Attempt(Verdict.OK)


def to_result(item: Claimed, attempt: Attempt, limits: Limits, now: datetime) -> Result:
    """The outbox outcome of ``attempt``: delivered, skipped, dead, or pending at a later time."""
    if attempt.skipped:
        return Result(item, SKIPPED, reason=attempt.reason)
    if attempt.verdict is Verdict.OK:
        return Result(item, DELIVERED)
    if attempt.verdict in (Verdict.FATAL, Verdict.TOO_LARGE):
        return Result(item, DEAD, reason=attempt.reason, detail=attempt.detail)
    delay = backoff_secs(item.attempts, limits.max_backoff_secs)
    if attempt.retry_after is not None:
        delay = max(delay, attempt.retry_after)
    retry_at = now + timedelta(seconds=delay)
    if retry_at > item.created_at + timedelta(seconds=limits.deadline_secs):
        reason = f"deadline passed after {item.attempts} attempts; last: {attempt.reason}"
        return Result(item, DEAD, reason=reason, detail=attempt.detail)
    return Result(item, PENDING, reason=attempt.reason, retry_at=retry_at)


class TokenBucket:
    """``rate`` units per second, bursting to ``capacity``; thread-safe."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, cost: float) -> float:
        """Take ``cost`` now (possibly going negative); returns how long the caller must wait.

        Going into debt and sleeping it off keeps a bundle larger than the burst possible and
        makes concurrent callers queue up fairly behind each other.
        """
        self._refill()
        self._tokens -= cost
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


@dataclass
class Pacer:
    """A destination's pace, shared by its lanes (see module docstring)."""

    requests_per_sec: float | None
    entries_per_sec: float | None
    transaction_cost: int = 1
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Any] = time.sleep
    floor: float = 0.05  # never below 5 % of the configured rate
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _paused_until: float = 0.0
    _factor: float = 1.0
    _share: float = 1.0  # of the destination's limits: 1 / live sync workers
    _requests: TokenBucket | None = None
    _entries: TokenBucket | None = None
    throttled: int = 0

    def __post_init__(self) -> None:
        # Bursts of a tenth of a second at most: a quota-limited destination (HealthLake) counts
        # on arrival, and a full second's burst from the hub left its bucket empty, so the
        # slightest timing jitter became a ThrottlingException. Paced evenly, the destination's
        # own burst allowance absorbs the jitter instead.
        if self.requests_per_sec:
            self._requests = TokenBucket(self.requests_per_sec,
                                         max(1.0, self.requests_per_sec / 10), self.clock)
        if self.entries_per_sec:
            self._entries = TokenBucket(self.entries_per_sec, self.entries_per_sec / 10,
                                        self.clock)

    def cost(self, entries: int, transaction: bool) -> int:
        return entries * (self.transaction_cost if transaction else 1)

    def wait(self, entries: int, *, transaction: bool = False,
             stop: threading.Event | None = None) -> None:
        """Block until a request of ``entries`` entries may go out."""
        with self._lock:
            wait = max(0.0, self._paused_until - self.clock())
            scale = self._factor * self._share
            if self._requests is not None:
                self._requests.rate = self.requests_per_sec * scale  # type: ignore[operator]
                wait = max(wait, self._requests.take(1))
            if self._entries is not None:
                self._entries.rate = self.entries_per_sec * scale  # type: ignore[operator]
                wait = max(wait, self._entries.take(self.cost(entries, transaction)))
        self._sleep(wait, stop)
        # A throttled answer may have paused the destination while this caller slept: a
        # request must not leave inside a Retry-After window it could know about.
        while True:
            with self._lock:
                pause = self._paused_until - self.clock()
            if pause <= 0 or (stop is not None and stop.is_set()):
                return
            self._sleep(pause, stop)

    def _sleep(self, secs: float, stop: threading.Event | None) -> None:
        if secs > 0:
            if stop is not None:
                stop.wait(secs)
            else:
                self.sleep(secs)

    def on_throttled(self, retry_after: float | None) -> None:
        """The destination said "slow down": pause everyone, then go slower."""
        with self._lock:
            self.throttled += 1
            pause = retry_after if retry_after is not None else 1.0
            self._paused_until = max(self._paused_until, self.clock() + pause)
            self._factor = max(self.floor, self._factor * 0.7)

    def on_success(self) -> None:
        with self._lock:
            if self._factor < 1.0:
                self._factor = min(1.0, self._factor + 0.02)

    @property
    def factor(self) -> float:
        return self._factor

    @property
    def share(self) -> float:
        return self._share

    def set_workers(self, live: int) -> None:
        """``live`` sync workers (processes) serve this destination: take 1/live of its rate."""
        with self._lock:
            self._share = 1.0 / max(1, live)


class CircuitBreaker:
    """Closed → (N consecutive failures) open → (cool-down) half-open probe → closed or open."""

    def __init__(self, failures: int, open_secs: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.open_secs = open_secs
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.opened = 0  # times opened, for tests and status

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probing else "open"

    def allow(self) -> bool:
        """May a request go out now? In half-open state only one probe at a time."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._probing or self._clock() < self._opened_at + self.open_secs:
                return False
            self._probing = True
            return True

    def cancel_probe(self) -> None:
        """The half-open probe found nothing to send: let the next attempt probe instead."""
        with self._lock:
            self._probing = False

    def wait_hint(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.05, self._opened_at + self.open_secs - self._clock())

    def record(self, success: bool) -> None:
        """Record a request's outcome (a refused resource is a success of the channel)."""
        with self._lock:
            if success:
                self._failures = 0
                self._opened_at = None
                self._probing = False
                return
            self._failures += 1
            if self._probing or (self._opened_at is None and self._failures >= self.threshold):
                self._opened_at = self._clock()
                self._probing = False
                self.opened += 1
