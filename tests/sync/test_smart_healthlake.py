"""SMART Backend Services against a verifying token endpoint, and HealthLake against a loopback
endpoint that checks SigV4 with botocore and enforces the tier's limits. Real HTTP throughout."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from hub.runtime import Hub
from hub.store import delivery
from hub.sync import keys as signing_keys
from hub.sync.auth import SmartBackendAuth
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker
from tests.sync.conftest import configure, outbox_rows, seed, server_stats, write_config
from tests.sync.fhir_server import ServerThread

CLIENT_ID = "hub-backend-client"


def smart_dest(url: str, key_file: Path, alg: str, **extra: object) -> str:
    lines = "".join(f"      {k}: {v}\n" for k, v in extra.items())
    return (f"destinations:\n  - name: ehr\n    type: fhir\n    base_url: {url}/fhir\n"
            f"    auth:\n      kind: smart\n      client_id: {CLIENT_ID}\n"
            f"      token_url: {url}/token\n      private_key_file: {key_file}\n"
            f"      alg: {alg}\n      scopes: [system/Observation.cu]\n{lines}"
            f"    limits: {{bundle_size: 10, circuit_open_secs: 0.5, max_backoff_secs: 0.2}}\n")


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_backend_services_every_claim_rule_token_cached_one_reauth_on_401(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path, alg: str) -> None:
    key = signing_keys.write_new_key(tmp_path / "keys", alg)  # type: ignore[arg-type]
    configure(fhir_server.url, smart={
        "client_id": CLIENT_ID, "token_url": f"{fhir_server.url}/token",
        "jwks": signing_keys.jwks(tmp_path / "keys"),
        "allowed_scopes": ["system/Observation.cu", "system/Communication.c"]})
    config = write_config(tmp_path, smart_dest(fhir_server.url,
                                               tmp_path / "keys" / f"{key.kid}.pem", alg))
    made = seed(hub, OutboxRouter.from_config(config), patients=3, per_patient=10)
    worker = SyncWorker(hub.engine, config)
    worker.drain("ehr")
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made)
    # Three Bundles, one token: cached until expiry minus skew.
    (first,) = stats["token_requests"]
    assert first["ok"] and first["alg"] == alg and first["kid"] == key.kid
    assert first["iss"] == first["sub"] == CLIENT_ID
    assert 0 < first["exp_ahead"] <= 300 and first["scope"] == "system/Observation.cu"
    # The server forgets its tokens (e.g. a restart): the hub gets a 401, re-authenticates
    # once, and carries on.
    httpx.post(f"{fhir_server.url}/_admin/reset", timeout=5)
    configure(fhir_server.url)  # keep the SMART settings
    more = seed(hub, OutboxRouter.from_config(config), patients=3, per_patient=2, start=10)
    worker.drain("ehr")
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(more)
    assert stats["counters"]["unauthorized"] == 1
    (second,) = stats["token_requests"]
    assert second["ok"] and second["jti"] != first["jti"]  # a fresh jti per assertion
    assert {r.status for r in outbox_rows(hub)} == {"delivered"}
    worker.close()


def test_token_cached_until_expiry_minus_skew(tmp_path: Path) -> None:
    from hub.sync.config import SmartAuth

    key = signing_keys.write_new_key(tmp_path, "RS384")
    now = [1000.0]
    served: list[dict[str, str]] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        served.append(dict(httpx.QueryParams(request.content.decode())))
        return httpx.Response(200, json={"access_token": f"t{len(served)}", "expires_in": 300})

    spec = SmartAuth(kind="smart", client_id="c", token_url="https://ehr.example/token",  # type: ignore[arg-type]
                     private_key_file=tmp_path / f"{key.kid}.pem", skew_secs=30)
    auth = SmartBackendAuth(spec, httpx.Client(transport=httpx.MockTransport(token_endpoint)),
                            clock=lambda: now[0])
    assert auth.token() == "t1"
    now[0] += 269  # 300 - 30 skew - 1
    assert auth.token() == "t1"
    now[0] += 2
    assert auth.token() == "t2"
    assert auth.reauthenticate() and auth.token() == "t3"
    assertions = [s["client_assertion"] for s in served]
    assert len(set(assertions)) == 3


HL_ID = "0123456789abcdef0123456789abcdef"


def healthlake_dest(url: str, tier: str, **limits: object) -> str:
    extra = "".join(f", {k}: {v}" for k, v in limits.items())
    return (f"destinations:\n  - name: lake\n    type: healthlake\n    region: us-east-1\n"
            f"    datastore_id: {HL_ID}\n    tier: {tier}\n    endpoint_url: {url}\n"
            f"    limits: {{circuit_open_secs: 0.5, max_backoff_secs: 0.2{extra}}}\n")


@pytest.mark.parametrize("tier,max_entries", [("legacy", 160), ("current", 500)])
def test_healthlake_sigv4_verified_bundles_within_tier_no_duplicates(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        tier: str, max_entries: int) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLETEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key-not-real")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    configure(fhir_server.url, healthlake={
        "access_key": "AKIDEXAMPLETEST", "secret_key": "test-secret-key-not-real",
        "region": "us-east-1", "max_entries": max_entries, "unit": "requests", "rate": 50})
    config = write_config(tmp_path, healthlake_dest(fhir_server.url, tier))
    made = seed(hub, OutboxRouter.from_config(config), patients=20, per_patient=60)
    worker = SyncWorker(hub.engine, config)
    assert worker.senders["lake"].limits.bundle_size == max_entries
    worker.drain("lake")
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made) and stats["duplicates"] == {}
    assert stats["counters"]["sigv4_ok"] == -(-len(made) // max_entries)
    assert "sigv4_refused" not in stats["counters"]
    assert "too_many_entries" not in stats["counters"]
    worker.close()


def test_healthlake_wrong_credentials_refused_by_the_verifier_and_kept_for_retry(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLETEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-different-secret")
    configure(fhir_server.url, healthlake={
        "access_key": "AKIDEXAMPLETEST", "secret_key": "test-secret-key-not-real",
        "region": "us-east-1", "max_entries": 500, "unit": "requests", "rate": 50})
    config = write_config(tmp_path, healthlake_dest(fhir_server.url, "current"))
    seed(hub, OutboxRouter.from_config(config), patients=1, per_patient=3)
    worker = SyncWorker(hub.engine, config)
    worker.drain("lake")
    assert server_stats(fhir_server.url)["counters"]["sigv4_refused"] == 1
    assert server_stats(fhir_server.url)["resources"] == 0
    # A credentials problem, not the data's: kept for retry behind the circuit, not dead.
    assert {(r.status, r.last_error) for r in outbox_rows(hub)} == {("pending", "HTTP 403")}
    worker.close()


def test_healthlake_throttling_exception_slows_down_and_idempotency_key_dedupes(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLETEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key-not-real")
    # The quota is 4 Bundles/s, the hub is configured for 8: ThrottlingException (as a 400,
    # the way the SDK reports it) must slow it down, and everything still arrives.
    configure(fhir_server.url, healthlake={
        "access_key": "AKIDEXAMPLETEST", "secret_key": "test-secret-key-not-real",
        "region": "us-east-1", "max_entries": 160, "unit": "requests", "rate": 4,
        "throttle_status": 400})
    config = write_config(tmp_path, healthlake_dest(fhir_server.url, "legacy", bundle_size=10,
                                                    requests_per_sec=8))
    made = seed(hub, OutboxRouter.from_config(config), patients=10, per_patient=10)
    worker = SyncWorker(hub.engine, config)
    for _ in range(400):
        if worker.drain("lake") == 0 and {r.status for r in outbox_rows(hub)} == {"delivered"}:
            break
        time.sleep(0.05)
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(made) and stats["duplicates"] == {}
    assert stats["counters"]["throttled"] >= 1
    assert worker.senders["lake"].pacer.throttled >= 1
    # A Bundle applied whose answer was lost: re-sent with the same idempotency key → 409 →
    # counted as delivered, nothing applied twice.
    configure(fhir_server.url, healthlake={
        "access_key": "AKIDEXAMPLETEST", "secret_key": "test-secret-key-not-real",
        "region": "us-east-1", "max_entries": 160, "unit": "requests", "rate": 100})
    seed(hub, OutboxRouter.from_config(config), patients=1, per_patient=5, start=10)
    items = delivery.claim(hub.engine, "lake", 10, lease_secs=0.0)
    worker.senders["lake"].deliver(items)
    worker.drain("lake")
    stats = server_stats(fhir_server.url)
    assert stats["counters"]["idempotent_replays"] == 1
    assert stats["resources"] == len(made) + 5
    assert {r.status for r in outbox_rows(hub)} == {"delivered"}
    worker.close()
