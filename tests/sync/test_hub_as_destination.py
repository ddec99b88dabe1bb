"""The hub's own FHIR API in a second process (``python -m hub serve``) as a sync destination:
the sender reads its CapabilityStatement, writes PUT-as-create in batch Bundles, and a full
replay changes nothing there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, func, select

from hub.runtime import Hub
from hub.store import delivery, inbox
from hub.store.db import upgrade
from hub.store.models import Resource
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker
from hub.worker import drain
from tests.conftest import REPO, TEST_SECRET
from tests.readings import canonical
from tests.sync.conftest import outbox_rows, write_config
from tests.sync.fhir_server import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def destination_hub(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A second hub (API + worker) on its own SQLite file: (FHIR base URL, API key, DB URL)."""
    db = f"sqlite:///{tmp_path / 'destination.db'}"
    upgrade(db)
    env = {**os.environ, "HUB_SECRET_KEY": TEST_SECRET, "HUB_ENV": "test",
           "HUB_DATABASE_URL": db, "HUB_MAPPINGS_DIR": str(REPO / "mappings"),
           "HUB_MLLP_ENABLED": "false", "HUB_DESTINATIONS_FILE": ""}
    env.pop("HUB_DESTINATIONS_FILE")
    key = subprocess.run([sys.executable, "-m", "hub", "keys", "create", "--name", "sync",
                          "--source", "fhir"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--port", str(port),
                             "--no-migrate"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield f"{base}/fhir", key, db
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_hubs_own_fhir_api_in_a_second_process_receives_everything_once(
        hub: Hub, destination_hub: tuple[str, str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    base, key, dest_db = destination_hub
    monkeypatch.setenv("DEST_HUB_KEY", key)
    config = write_config(tmp_path, (
        f"destinations:\n  - name: peer\n    type: fhir\n    base_url: {base}\n"
        "    auth: {kind: bearer, token_env: DEST_HUB_KEY}\n"
        "    route: {resource_types: [Observation]}\n"
        "    limits: {bundle_size: 20, max_backoff_secs: 0.2}\n"))
    hub.pipeline.router = OutboxRouter.from_config(config)
    for patient in ("pat-1", "pat-2"):
        inbox.receive(hub.engine, source="hub", channel="http", content_type="application/json",
                      body=orjson.dumps(canonical(12, patient=patient, device=f"cuff-{patient}")))
    drain(hub.pipeline, hub.engine, 10)
    worker = SyncWorker(hub.engine, config)
    assert worker.senders["peer"].write_mode("Observation") == "put"  # type: ignore[attr-defined]
    sent = len(outbox_rows(hub))
    for _ in range(100):
        worker.drain("peer")
        if {r.status for r in outbox_rows(hub)} == {"delivered"}:
            break
        time.sleep(0.1)
    dead = delivery.list_dead(hub.engine)
    assert {r.status for r in outbox_rows(hub)} == {"delivered"}, \
        repr([delivery.get_dead(hub.engine, d["id"]) for d in dead[:1]])
    peer = create_engine(dest_db)

    def observations() -> list[tuple[str, int]]:
        with peer.connect() as conn:
            return sorted(conn.execute(select(Resource.res_id, Resource.version_id)
                                       .where(Resource.res_type == "Observation")).all())

    with hub.engine.connect() as conn:
        ours = sorted(conn.execute(select(Resource.res_id).where(
            Resource.res_type == "Observation")).scalars())
    first = observations()
    assert [r[0] for r in first] == ours and len(ours) == sent  # same ids, each once
    # A full replay (a backfill) sends everything again: nothing new, no new versions.
    assert delivery.enqueue_since(hub.engine, "peer", delivery.utcnow().replace(year=2000),
                                  resource_types=["Observation"]) == sent
    worker.drain("peer")
    assert observations() == first
    with peer.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Resource)
                            .where(Resource.res_type == "Observation")).scalar() == sent
    peer.dispose()
    worker.close()
