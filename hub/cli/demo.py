"""The newcomer's demo: a fresh API key and sample readings posted through the real API.

Development only. The readings in ``fixtures/demo/*.json`` are posted over HTTP once the server
answers, then a heart-rate reading every 10 s keeps data flowing.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from hub.errors import ConfigurationError
from hub.runtime import Hub
from hub.store import api_keys

log = logging.getLogger("hub.demo")


def start_demo(hub: Hub, base_url: str, folder: Path) -> None:
    if hub.settings.env == "production":
        raise ConfigurationError("--demo is for development only")
    secret = hub.settings.secret_key.get_secret_value()
    api_keys.revoke(hub.engine, "demo")
    name = f"demo-{int(time.time())}"
    key = api_keys.create(hub.engine, secret, name, ["*"])
    banner = (
        f"\n  Demo API key ({name}): {key}\n"
        f"  Open {base_url}/docs  (Authorize with the key)\n"
        f"  curl -H 'Authorization: Bearer {key}' '{base_url}/fhir/Observation?_count=5'\n"
    )
    print(banner, flush=True)  # noqa: T201 - the one thing a newcomer must see
    threading.Thread(target=_feed, args=(base_url, key, folder), daemon=True,
                     name="hub-demo").start()


def _feed(base_url: str, key: str, folder: Path) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        for _ in range(100):
            try:
                client.get("/health")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        for path in sorted(folder.glob("*.json")):
            answer = client.post("/ingest/hub", content=path.read_bytes())
            log.info("demo: posted %s → %s", path.name, answer.status_code)
        beat = 0
        while True:
            time.sleep(10)
            beat += 1
            reading = {"device": {"id": "demo-watch-1"}, "patient": {"id": "demo-patient-1"},
                       "readings": [{"type": "heart-rate", "value": 68 + beat % 7, "unit": "/min",
                                     "time": datetime.now(UTC).isoformat()}]}
            try:
                client.post("/ingest/hub", json=reading)
            except httpx.TransportError:
                return
