"""Request-rate limits per API key (hub.api.ratelimit): 429 with Retry-After, nothing stored,
other clients unaffected; counts shared between processes through the real Redis server."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.api.app import create_app
from hub.errors import ConfigurationError
from hub.runtime import Hub
from hub.settings import Settings
from hub.store import api_keys
from hub.store.models import InboundMessage
from hub.telemetry import Telemetry
from tests.conftest import TEST_SECRET, auth, make_settings
from tests.readings import canonical
from tests.test_cli import run

REDIS_URL = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def stored(hub: Hub) -> int:
    with hub.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(InboundMessage)).scalar_one())


def post(client: TestClient, key: str, n: int) -> int:
    return client.post("/ingest/hub", json=canonical(1, device=f"rl-{n}"),
                       headers=auth(key)).status_code


@pytest.fixture
def limited_hub(db_url: str) -> Iterator[Hub]:
    built = Hub.build(make_settings(db_url, rate_limit="1000/minute"), Telemetry.disabled())
    yield built
    built.engine.dispose()


def test_a_key_over_its_limit_gets_429_and_nothing_is_stored(limited_hub: Hub) -> None:
    hub = limited_hub
    noisy = api_keys.create(hub.engine, TEST_SECRET, "noisy", ["hub"], "3/minute")
    quiet = api_keys.create(hub.engine, TEST_SECRET, "quiet", ["hub"])
    with TestClient(create_app(hub, inline_worker=False)) as client:
        assert [post(client, noisy, n) for n in range(3)] == [202, 202, 202]
        over = client.post("/ingest/hub", json=canonical(1, device="rl-over"),
                           headers=auth(noisy))
        assert over.status_code == 429
        body = over.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == "throttled"
        assert "3 per 1 minute" in body["issue"][0]["diagnostics"]
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        assert stored(hub) == 3  # the throttled body was never stored
        # another client, under the process default (1000/minute), is not held back
        assert [post(client, quiet, n) for n in range(10, 15)] == [202] * 5
        assert stored(hub) == 8
        # every authenticated endpoint counts, not only ingest
        assert client.get("/fhir/metadata", headers=auth(noisy)).status_code == 429


def test_without_any_limit_a_key_is_not_throttled(hub: Hub, api_key: str) -> None:
    with TestClient(create_app(hub, inline_worker=False)) as client:
        assert [post(client, api_key, n) for n in range(30)] == [202] * 30


def test_a_limit_changed_on_a_running_hub_applies_at_the_next_request(hub: Hub) -> None:
    key = api_keys.create(hub.engine, TEST_SECRET, "vendor-b", ["hub"])
    with TestClient(create_app(hub, inline_worker=False)) as client:
        assert post(client, key, 0) == 202
        assert api_keys.set_rate_limit(hub.engine, "vendor-b", "1/hour")
        assert post(client, key, 1) == 202  # the first request in the new limit's window
        assert post(client, key, 2) == 429
        assert api_keys.set_rate_limit(hub.engine, "vendor-b", None)  # back to no limit
        assert post(client, key, 3) == 202
    assert not api_keys.set_rate_limit(hub.engine, "no-such-key", "1/hour")


def test_a_malformed_limit_is_refused_before_anything_is_written(hub: Hub) -> None:
    with pytest.raises(ConfigurationError, match="not a rate limit"):
        api_keys.create(hub.engine, TEST_SECRET, "bad", ["hub"], "lots")
    assert all(k["name"] != "bad" for k in api_keys.list_keys(hub.engine))
    with pytest.raises(ValueError, match="not a rate limit"):
        Settings(rate_limit="ten per second", env="test", secret_key=TEST_SECRET)


def _redis_up() -> bool:
    host, port = REDIS_URL.removeprefix("redis://").split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def test_redis_storage_shares_one_count_between_hub_processes(db_url: str) -> None:
    if not _redis_up():
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL}; .ci/run starts it")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    name = f"shared-{uuid.uuid4().hex[:8]}"  # the Redis server outlives the test: a fresh key
    settings = make_settings(db_url, rate_limit_storage=REDIS_URL)
    first, second = (Hub.build(settings, Telemetry.disabled()) for _ in range(2))
    key = api_keys.create(first.engine, TEST_SECRET, name, ["hub"], "4/minute")
    try:
        with TestClient(create_app(first, inline_worker=False)) as a, \
                TestClient(create_app(second, inline_worker=False)) as b:
            # two API processes, one budget: 2 + 2 accepted, then both refuse
            assert [post(a, key, 0), post(b, key, 1), post(a, key, 2), post(b, key, 3)] == [202] * 4
            assert post(a, key, 4) == 429
            assert post(b, key, 5) == 429
    finally:
        first.engine.dispose()
        second.engine.dispose()


def test_an_unreachable_redis_lets_requests_through(hub: Hub, caplog: pytest.LogCaptureFixture
                                                    ) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    hub.settings.rate_limit_storage = f"redis://127.0.0.1:{dead}"
    key = api_keys.create(hub.engine, TEST_SECRET, "vendor-c", ["hub"], "1/hour")
    with TestClient(create_app(hub, inline_worker=False)) as client:
        assert [post(client, key, n) for n in range(3)] == [202] * 3
    assert "rate-limit store unavailable" in caplog.text
    assert "vendor-c" not in caplog.text  # no client names in logs


def test_cli_sets_and_lists_a_keys_limit(tmp_path: Path) -> None:
    env = {"HUB_DATABASE_URL": f"sqlite:///{tmp_path}/rl.db"}
    assert run("db", "upgrade", env=env).returncode == 0
    made = run("keys", "create", "--name", "v", "--source", "hub", "--rate-limit", "5/second",
               env=env)
    assert made.returncode == 0, made.stderr
    assert "5/second" in run("keys", "list", env=env).stdout
    changed = run("keys", "limit", "v", "default", env=env)
    assert changed.returncode == 0 and "default rate limit" in changed.stdout
    assert "default rate limit" in run("keys", "list", env=env).stdout
    bad = run("keys", "limit", "v", "fast", env=env)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "not a rate limit" in bad.stderr
    assert "Traceback" not in bad.stderr
