"""EHR write profiles (Oracle Health, Epic vitals) applied before sending, and the dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.runtime import Hub
from hub.sync import profiles
from hub.sync.config import EhrProfile, load_destinations
from hub.sync.routing import OutboxRouter
from hub.sync.worker import SyncWorker
from tests.conftest import REPO, TEST_SECRET
from tests.sync.conftest import observation, outbox_rows, seed, server_stats, write_config
from tests.sync.fhir_server import ServerThread

ORACLE = EhrProfile(name="oracle-health")
EPIC = EhrProfile(name="epic-vitals", flowsheet_system="urn:oid:1.2.840.114350.1.13.0.1.7.2.707679",
                  flowsheets={"85354-9": "5", "8867-4": "8"})


def flag(status: str = "active") -> dict[str, Any]:
    return {"resourceType": "Flag", "id": "f1", "status": status,
            "code": {"text": "SpO2 below 90 % on 2 readings"},
            "subject": {"reference": "Patient/p1"}, "period": {"start": "2026-11-20T08:00:00Z"}}


def test_oracle_keeps_components_only_on_bp_and_pulse_ox() -> None:
    bp = observation(1, 1, components=True)
    assert profiles.apply(ORACLE, bp) == [bp]
    other = observation(1, 2, components=True)
    other["code"] = {"coding": [{"system": "http://loinc.org", "code": "85353-1"}]}
    parts = profiles.apply(ORACLE, other)
    assert len(parts) == 2 and all("component" not in p for p in parts)
    assert [p["code"]["coding"][0]["code"] for p in parts] == ["8480-6", "8462-4"]
    assert len({p["id"] for p in parts}) == 2 and parts == profiles.apply(ORACLE, other)
    assert all(p["derivedFrom"] == [{"reference": f"Observation/{other['id']}"}] for p in parts)


def test_oracle_has_no_flag_so_an_active_flag_becomes_a_communication() -> None:
    (comm,) = profiles.apply(ORACLE, flag())
    assert comm["resourceType"] == "Communication"
    assert comm["subject"] == {"reference": "Patient/p1"}
    assert comm["payload"] == [{"contentString": "SpO2 below 90 % on 2 readings"}]
    assert comm["category"][0]["coding"][0]["code"] == "alert"
    with pytest.raises(profiles.Skip):
        profiles.apply(ORACLE, flag("inactive"))


def test_oracle_drops_modifier_elements() -> None:
    obs = observation(1, 3)
    obs["modifierExtension"] = [{"url": "x", "valueBoolean": True}]
    (sent,) = profiles.apply(ORACLE, obs)
    assert "modifierExtension" not in sent and "modifierExtension" in obs  # stored copy intact


def test_epic_final_only_flowsheet_coding_and_bp_as_string() -> None:
    with pytest.raises(profiles.Skip, match="final only"):
        profiles.apply(EPIC, observation(1, 1, status="preliminary"))
    (bp,) = profiles.apply(EPIC, observation(1, 4, components=True))
    assert bp["valueString"] == "124/80" and "component" not in bp
    assert {"system": EPIC.flowsheet_system, "code": "5"} in bp["code"]["coding"]
    unmapped = observation(1, 5)
    unmapped["code"] = {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}
    with pytest.raises(profiles.Skip, match="flowsheet"):
        profiles.apply(EPIC, unmapped)
    with pytest.raises(profiles.Skip, match="Flag"):
        profiles.apply(EPIC, flag())


def test_profile_applied_before_sending_skips_recorded_in_the_outbox(
        hub: Hub, fhir_server: ServerThread, tmp_path: Path) -> None:
    config = write_config(tmp_path, (
        f"destinations:\n  - name: ehr\n    type: fhir\n    base_url: {fhir_server.url}/fhir\n"
        f"    profile: {{name: epic-vitals, flowsheet_system: '{EPIC.flowsheet_system}', "
        "flowsheets: {'8867-4': '8'}}\n"))
    router = OutboxRouter.from_config(config)
    final = seed(hub, router, patients=2, per_patient=3)
    seed(hub, router, patients=2, per_patient=1, start=3, status="preliminary")
    SyncWorker(hub.engine, config).drain("ehr")
    stats = server_stats(fhir_server.url)
    assert stats["resources"] == len(final)
    sent = [r for r in stats["arrivals"].values()]
    assert sum(len(a) for a in sent) == len(final)
    rows = outbox_rows(hub)
    skipped = [r for r in rows if r.status == "skipped"]
    assert len(skipped) == 2 and all("final only" in r.last_error for r in skipped)


def test_dry_run_prints_what_would_be_sent_and_sends_nothing(
        hub: Hub, db_url: str, fhir_server: ServerThread, tmp_path: Path) -> None:
    write_config(tmp_path, (
        f"destinations:\n  - name: ehr\n    type: fhir\n    base_url: {fhir_server.url}/fhir\n"
        "    write_mode: put\n    profile: {name: oracle-health}\n"))
    config = load_destinations(tmp_path / "destinations.yaml")
    seed(hub, OutboxRouter.from_config(config), patients=1, per_patient=2)
    env = {**os.environ, "HUB_SECRET_KEY": TEST_SECRET, "HUB_ENV": "test",
           "HUB_DATABASE_URL": db_url,
           "HUB_DESTINATIONS_FILE": str(tmp_path / "destinations.yaml")}
    result = subprocess.run([sys.executable, "-m", "hub", "sync", "--dry-run", "--limit", "5"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    preview = json.loads(result.stdout)
    assert preview["destination"] == "ehr"
    entries = preview["bundle"]["entry"]
    assert [e["request"]["method"] for e in entries] == ["PUT", "PUT"]
    assert server_stats(fhir_server.url)["counters"].get("requests", 0) == 0
    assert {r.status for r in outbox_rows(hub)} == {"pending"}


def test_the_example_destinations_file_is_valid() -> None:
    config = load_destinations(REPO / "mappings" / "destinations.example.yaml")
    kinds = {d.type for d in config.destinations}
    assert kinds == {"fhir", "healthlake", "hl7v2", "hl7v2-ack"}
