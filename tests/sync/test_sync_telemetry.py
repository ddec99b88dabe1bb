"""Sync is traced like intake: a span per delivery step with destination and counts only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hub.runtime import Hub
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker
from hub.telemetry import Telemetry
from tests.sync.conftest import configure, fhir_dest, seed, write_config
from tests.sync.fhir_server import ServerThread


def test_each_delivery_step_is_a_span_with_counts_and_no_content(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    config = write_config(tmp_path, fhir_dest(fhir_server.url, bundle_size=10))
    router = OutboxRouter.from_config(config)
    made = seed(hub, router, patients=2, per_patient=12)
    worker = SyncWorker(hub.engine, config, telemetry=Telemetry.from_env(exporter=exporter))
    worker.drain("ehr")
    delivering = _deliver_spans(exporter)
    assert len(delivering) == 3  # Bundles of 10, 10 and 4
    assert sum(a["hub.delivered"] for a in delivering) == len(made)

    exporter.clear()
    made += seed(hub, router, patients=1, per_patient=5, start=100)
    configure(fhir_server.url, outage_secs=60)
    worker.step("ehr")  # the destination is down: the claimed rows wait for a retry
    worker.close()
    [failed] = _deliver_spans(exporter)
    assert failed["hub.batch"] == 5 and failed["hub.retried"] == 5
    assert failed["hub.delivered"] == 0 and failed["hub.dead"] == 0

    for a in [*delivering, failed]:
        assert a["hub.destination"] == "ehr"
        # every claimed row is accounted for in its own step
        assert a["hub.batch"] == (a["hub.delivered"] + a["hub.retried"] + a["hub.dead"]
                                  + a["hub.skipped"])
    exported = " ".join(str(a) for a in [*delivering, failed])
    for resource in made:  # neither ids of the content nor subjects appear
        assert resource["id"] not in exported
        assert resource["subject"]["reference"] not in exported


def _deliver_spans(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [dict(s.attributes or {}) for s in exporter.get_finished_spans()
            if s.name == "hub.deliver"]
