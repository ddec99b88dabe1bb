"""Retry classification, backoff, pace and circuit — unit tests (MockTransport only at the
transport boundary)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from hub.store.delivery import Claimed
from hub.sync.config import FhirDestination, Limits
from hub.sync.fhir_rest import FhirRestSender
from hub.sync.policy import (
    Attempt,
    CircuitBreaker,
    Pacer,
    Verdict,
    backoff_secs,
    classify,
    retry_after_secs,
    to_result,
)
from tests.sync.conftest import observation

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("status,verdict", [
    (200, Verdict.OK), (201, Verdict.OK), (429, Verdict.THROTTLED), (500, Verdict.RETRY),
    (502, Verdict.RETRY), (503, Verdict.RETRY), (504, Verdict.RETRY), (408, Verdict.RETRY),
    (409, Verdict.CONFLICT), (412, Verdict.CONFLICT), (413, Verdict.TOO_LARGE),
    (401, Verdict.AUTH), (403, Verdict.AUTH), (400, Verdict.FATAL), (422, Verdict.FATAL),
    (404, Verdict.FATAL), (501, Verdict.FATAL), (307, Verdict.AUTH)])
def test_classification(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    for attempt in range(1, 30):
        values = [backoff_secs(attempt, 64) for _ in range(20)]
        assert all(0 <= v <= 64 for v in values)
        if attempt <= 5:
            assert all(2 ** (attempt - 1) <= v <= 2 ** (attempt - 1) + 1 for v in values)
    assert len({backoff_secs(3, 64) for _ in range(20)}) > 1  # jittered


def test_retry_after_parsing() -> None:
    assert retry_after_secs("120") == 120
    assert retry_after_secs("Wed, 21 Oct 2015 07:28:00 GMT",
                            now=datetime(2015, 10, 21, 7, 27, tzinfo=UTC).timestamp()) == 60
    assert retry_after_secs("soon") is None and retry_after_secs(None) is None


def item(attempts: int = 1, created: datetime = NOW) -> Claimed:
    return Claimed(1, "Observation", "x", 1, "Patient/p", attempts, created, {}, 1, None)


def test_retry_after_is_a_floor_and_the_deadline_dead_letters() -> None:
    limits = Limits(max_backoff_secs=64, deadline_secs=3600)
    waited = to_result(item(), Attempt(Verdict.THROTTLED, "429", retry_after=600), limits, NOW)
    assert waited.status == "pending" and waited.retry_at is not None
    assert waited.retry_at >= NOW + timedelta(seconds=600)
    late = to_result(item(attempts=9, created=NOW - timedelta(seconds=3590)),
                     Attempt(Verdict.RETRY, "HTTP 503"), limits, NOW)
    assert late.status == "dead" and late.reason is not None and "deadline" in late.reason
    refused = to_result(item(), Attempt(Verdict.FATAL, "HTTP 422", detail={"x": 1}), limits, NOW)
    assert refused.status == "dead" and refused.detail == {"x": 1}


def test_pacer_pauses_on_throttle_slows_down_and_recovers() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(secs: float) -> None:
        slept.append(secs)
        clock[0] += secs

    pacer = Pacer(requests_per_sec=10, entries_per_sec=None, clock=lambda: clock[0],
                  sleep=sleep)
    pacer.on_throttled(5.0)
    pacer.wait(1)
    assert sum(slept) >= 5.0 and pacer.factor < 1.0
    for _ in range(100):
        pacer.on_success()
    assert pacer.factor == 1.0


def test_transaction_entries_cost_twice() -> None:
    clock = [0.0]
    pacer = Pacer(requests_per_sec=None, entries_per_sec=100, transaction_cost=2,
                  clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    pacer.wait(100, transaction=True)  # 200 units against 100/s, a 10-unit burst: 1.9 s
    assert clock[0] == pytest.approx(1.9)
    pacer.wait(100)  # a batch of 100 costs 100: one more second
    assert clock[0] == pytest.approx(2.9)


def test_circuit_opens_probes_once_and_closes_on_recovery() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(3, 10.0, clock=lambda: clock[0])
    for _ in range(3):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    clock[0] += 10
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record(False)  # the probe failed: open again
    assert breaker.state == "open" and breaker.opened == 2
    clock[0] += 10
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed" and breaker.allow()


def sender(handler: Any, **limits: Any) -> FhirRestSender:
    dest = FhirDestination(name="ehr", type="fhir", base_url="https://ehr.example/fhir",  # type: ignore[arg-type]
                           write_mode="put")
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return FhirRestSender(dest, Limits(bundle_size=10, **limits), http=http)


def claimed(n: int) -> list[Claimed]:
    return [Claimed(i, "Observation", observation(0, i)["id"], 1, "Patient/p0", 1, NOW,
                    observation(0, i), 1, None) for i in range(n)]


@pytest.mark.parametrize("failure", [
    httpx.ReadTimeout("slow"), httpx.ConnectError("refused"),
    httpx.RemoteProtocolError("reset"), 500, 503, 504])
def test_transient_failures_are_retried_and_count_against_the_circuit(failure: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(failure, Exception):
            raise failure
        return httpx.Response(failure)

    s = sender(handler, circuit_failures=1)
    outcome = s.deliver(claimed(3))
    assert {a.verdict for a in outcome.values()} == {Verdict.RETRY}
    assert s.breaker.state == "open"


def test_bad_request_is_split_until_the_offending_entry_stands_alone() -> None:
    bad = observation(0, 2)["id"]
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        entries = httpx.Response(200, content=request.content).json()["entry"]
        seen.append(len(entries))
        if any(e["resource"]["id"] == bad for e in entries):
            return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invalid"}]})
        return httpx.Response(200, json={"resourceType": "Bundle", "entry": [
            {"response": {"status": "201 Created"}} for _ in entries]})

    outcome = sender(handler).deliver(claimed(4))
    assert outcome[2].verdict is Verdict.FATAL and outcome[2].detail is not None
    assert {outcome[i].verdict for i in (0, 1, 3)} == {Verdict.OK}
    assert seen[0] == 4 and 1 in seen


@pytest.mark.parametrize("conflicts,expected", [(1, Verdict.OK), (2, Verdict.OK),
                                                (5, Verdict.FATAL)])
def test_conflict_rereads_and_retries_at_most_twice(conflicts: int, expected: Verdict) -> None:
    calls: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.headers.get("If-Match")))
        if request.method == "GET":
            return httpx.Response(200, json={}, headers={"ETag": 'W/"7"'})
        if request.method == "POST":  # the Bundle: its one entry conflicts
            return httpx.Response(200, json={"entry": [{"response": {"status": "409"}}]})
        puts = sum(1 for c in calls if c[0] == "PUT")
        return httpx.Response(409 if puts <= conflicts - 1 else 200)

    outcome = sender(handler).deliver(claimed(1))
    assert outcome[0].verdict is expected
    puts = [c for c in calls if c[0] == "PUT"]
    assert len(puts) <= 3 and all(c[1] == 'W/"7"' for c in puts[1:])
