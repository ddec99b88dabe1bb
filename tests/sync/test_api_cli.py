"""Sync through the pipeline and over the API and CLI: lineage, dead letters, replay, JWKS."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.runtime import Hub
from hub.store import api_keys, inbox
from hub.sync import keys as signing_keys
from hub.sync.routing import OutboxRouter
from hub.sync.settings import SyncSettings
from hub.sync.worker import SyncWorker
from hub.worker import drain
from tests.conftest import REPO, TEST_SECRET, auth
from tests.readings import canonical
from tests.sync.conftest import configure, fhir_dest, server_stats, write_config
from tests.sync.fhir_server import ServerThread

HUB = str(Path(sys.executable).parent / "hub")


def test_message_lineage_shows_delivery_per_resource_and_destination(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    config = write_config(tmp_path, fhir_dest(fhir_server.url).replace(
        "    limits:", "    route: {resource_types: [Observation]}\n    limits:"))
    hub.destinations = config
    hub.pipeline.router = OutboxRouter.from_config(config)
    key = api_keys.create(hub.engine, TEST_SECRET, "vendor", ["hub"])
    admin = api_keys.create(hub.engine, TEST_SECRET, "ops", ["*"])
    message = inbox.receive(hub.engine, source="hub", channel="http",
                            content_type="application/json",
                            body=orjson.dumps(canonical(3))).message_id
    drain(hub.pipeline, hub.engine, 10)
    with TestClient(create_app(hub, inline_worker=False)) as client:
        before = client.get(f"/messages/{message}", headers=auth(key)).json()
        observations = [r for r in before["resources"] if r.startswith("Observation/")]
        assert len(observations) >= 3  # the readings (and whatever rules derived)
        assert {d["status"] for r in observations for d in before["delivery"][r]} == {"pending"}
        assert not any(r.startswith("Patient/") for r in before["delivery"])  # not routed
        SyncWorker(hub.engine, config).drain("ehr")
        after = client.get(f"/messages/{message}", headers=auth(key)).json()
        for ref in observations:
            (status,) = after["delivery"][ref]
            assert status["destination"] == "ehr" and status["status"] == "delivered"
            assert status["deliveredAt"]
        assert server_stats(fhir_server.url)["resources"] == len(observations)
        # The outbox status over the API needs an administrator key.
        assert client.get("/sync/status", headers=auth(key)).status_code == 403
        counts = client.get("/sync/status", headers=auth(admin)).json()
        assert counts["destinations"]["ehr"]["delivered"] == len(observations)
        # Backfill over the API: queue everything again, deliver again, still 3 resources.
        queued = client.post("/sync/replay", headers=auth(admin),
                             json={"destination": "ehr", "since": "2000-01-01T00:00:00Z"})
        assert queued.json() == {"queued": len(observations)}


def test_dead_letters_listed_shown_and_replayed_over_the_api(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    from tests.sync.conftest import seed

    config = write_config(tmp_path, fhir_dest(fhir_server.url))
    hub.destinations = config
    seed(hub, OutboxRouter.from_config(config), 1, 1, status="entered-in-error")
    worker = SyncWorker(hub.engine, config)
    worker.drain("ehr")
    admin = api_keys.create(hub.engine, TEST_SECRET, "ops", ["*"])
    with TestClient(create_app(hub, inline_worker=False)) as client:
        listed = client.get("/sync/dead-letters", headers=auth(admin)).json()["deadLetters"]
        assert len(listed) == 1 and listed[0]["destination"] == "ehr"
        shown = client.get(f"/sync/dead-letters/{listed[0]['id']}", headers=auth(admin)).json()
        assert shown["detail"]["issue"][0]["code"] == "business-rule"
        replayed = client.post("/sync/dead-letters/replay", headers=auth(admin),
                               json={"ids": [listed[0]["id"]]})
        assert replayed.json() == {"replayed": 1}
        assert client.get("/sync/dead-letters", headers=auth(admin)).json()["deadLetters"] == []
        assert client.get("/sync/status", headers=auth(admin)).json()["destinations"]["ehr"] \
            == {"pending": 1}


def test_jwks_publishes_every_key_in_the_keys_dir(hub: Hub, tmp_path: Path) -> None:
    rsa = signing_keys.write_new_key(tmp_path / "keys", "RS384")
    ec = signing_keys.write_new_key(tmp_path / "keys", "ES384")
    hub.sync_settings = SyncSettings(keys_dir=tmp_path / "keys")
    with TestClient(create_app(hub, inline_worker=False)) as client:
        body = client.get("/.well-known/jwks.json").json()  # public: no key needed
    by_kid = {k["kid"]: k for k in body["keys"]}
    assert by_kid[rsa.kid]["kty"] == "RSA" and by_kid[rsa.kid]["alg"] == "RS384"
    assert by_kid[ec.kid]["crv"] == "P-384" and by_kid[ec.kid]["alg"] == "ES384"
    assert all("d" not in k for k in body["keys"])  # never a private member
    assert oct((tmp_path / "keys" / f"{rsa.kid}.pem").stat().st_mode)[-3:] == "600"


def run(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HUB_SECRET_KEY": TEST_SECRET, "HUB_ENV": "test", **env}
    return subprocess.run([HUB, *args], capture_output=True, text=True, env=full, cwd=cwd,
                          timeout=120)


def test_cli_destinations_check_keys_jwk_dlq_and_replay(
        fhir_server: ServerThread, tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "destinations.yaml"
    path.write_text(fhir_dest(fhir_server.url))
    env = {"HUB_DESTINATIONS_FILE": str(path), "HUB_DATABASE_URL": sqlite_url}
    checked = run("destinations", "check", "ehr", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "reachable" in checked.stdout and "Observation=put" in checked.stdout
    configure(fhir_server.url, outage_secs=30)
    down = run("destinations", "check", "ehr", env=env)
    assert down.returncode == 1 and "FAILED" in down.stderr
    jwk = run("keys", "jwk", "--alg", "ES384", "--dir", str(tmp_path / "k"), env=env)
    assert jwk.returncode == 0, jwk.stderr
    assert json.loads(jwk.stdout)["crv"] == "P-384"
    listed = run("dlq", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    queued = run("replay", "--destination", "ehr", "--since", "2000-01-01", env=env)
    assert queued.returncode == 0 and queued.stdout.startswith("queued"), queued.stderr


def test_cli_refuses_an_invalid_destinations_file_with_every_problem_positioned(
        tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "destinations.yaml"
    path.write_text("destinations:\n"
                    "  - name: ehr\n    type: fhir\n    base_url: not a url\n"
                    "  - name: lake\n    type: healthlake\n    region: moon\n"
                    "    datastore_id: abc\n    limits: {concurrency: 0}\n")
    result = run("destinations", "check", "ehr",
                 env={"HUB_DESTINATIONS_FILE": str(path), "HUB_DATABASE_URL": sqlite_url})
    assert result.returncode == 2
    assert f"{path}:4:" in result.stderr  # base_url
    assert f"{path}:7:" in result.stderr  # region
    assert f"{path}:9:" in result.stderr  # concurrency
    assert "Traceback" not in result.stderr


def test_hub_dataclass_default_has_no_destinations(hub: Hub) -> None:
    field = {f.name: f for f in dataclasses.fields(hub)}["destinations"]
    assert field.default_factory is not dataclasses.MISSING  # a Hub is built without one
    assert hub.destinations.destinations == []
