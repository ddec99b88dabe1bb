"""The ``hub`` command as a user runs it: real subprocesses, exit codes, stdout/stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.conftest import REPO, TEST_SECRET
from tests.readings import canonical

HUB = str(Path(sys.executable).parent / "hub")


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO
        ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HUB_SECRET_KEY": TEST_SECRET, "HUB_ENV": "test", **(env or {})}
    return subprocess.run([HUB, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=120)


def test_convert_prints_a_valid_r4_bundle_and_writes_nothing(tmp_path: Path) -> None:
    payload = tmp_path / "readings.json"
    payload.write_text(json.dumps(canonical(2, kind="blood-pressure")))
    db = tmp_path / "never.db"
    result = run("convert", "hub", str(payload), env={"HUB_DATABASE_URL": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    Bundle.model_validate(bundle)  # R4 (R4B models), not R5
    assert bundle["type"] == "collection"
    types = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert types == ["Device", "Observation", "Observation", "Patient"]
    bp = next(e["resource"] for e in bundle["entry"]
              if e["resource"]["resourceType"] == "Observation")
    assert bp["code"]["coding"][0]["code"] == "85354-9"
    assert [c["code"]["coding"][0]["code"] for c in bp["component"]] == ["8480-6", "8462-4"]
    assert not db.exists()


def test_convert_demo_fixtures_all_convert() -> None:
    files = sorted(str(p) for p in (REPO / "fixtures" / "demo").glob("*.json"))
    result = run("convert", "hub", *files)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["entry"]) > len(files)


def test_convert_bad_inputs_one_line_each_nonzero_no_traceback(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(canonical(1)))
    broken = tmp_path / "broken.json"
    broken.write_text('{"device": ')
    wrong_unit = tmp_path / "wrong-unit.json"
    body = canonical(1)
    body["readings"][0]["unit"] = "kg"
    wrong_unit.write_text(json.dumps(body))
    missing = tmp_path / "missing.json"
    result = run("convert", "hub", str(good), str(broken), str(wrong_unit), str(missing))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith(f"{broken}: body is not JSON")
    assert lines[1].startswith(f"{wrong_unit}: readings[0].unit: unit not accepted")
    assert lines[2].startswith(f"{missing}: cannot read")
    assert "Traceback" not in result.stderr
    # what did convert still goes to stdout
    assert len(json.loads(result.stdout)["entry"]) == 3


def test_convert_unknown_source_is_one_line(tmp_path: Path) -> None:
    payload = tmp_path / "x.json"
    payload.write_text("{}")
    result = run("convert", "nosuchvendor", str(payload))
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown source 'nosuchvendor'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_db_upgrade_and_keys_lifecycle(backend: str, tmp_path: Path,
                                       request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path}/cli.db"
    env = {"HUB_DATABASE_URL": url}
    assert run("db", "upgrade", env=env).returncode == 0
    assert run("db", "upgrade", env=env).returncode == 0  # idempotent
    name = f"ehr-team-{backend}-{tmp_path.name}"
    created = run("keys", "create", "--name", name, "--source", "hub", "--source", "fhir", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("hub_") and len(key) > 40
    again = run("keys", "create", "--name", name, "--source", "hub", env=env)
    assert again.returncode != 0 and "already exists" in again.stderr
    listed = run("keys", "list", env=env).stdout
    assert name in listed and "fhir,hub" in listed and key not in listed
    assert run("keys", "revoke", name, env=env).returncode == 0
    assert "revoked" in run("keys", "list", env=env).stdout
    missing = run("keys", "revoke", name, env=env)
    assert missing.returncode == 1 and "no active key" in missing.stderr


def test_production_refuses_the_default_secret(tmp_path: Path) -> None:
    result = run("db", "upgrade", env={"HUB_ENV": "production", "HUB_SECRET_KEY": "changethis",
                                       "HUB_DATABASE_URL": f"sqlite:///{tmp_path}/p.db"})
    assert result.returncode == 2
    assert "HUB_SECRET_KEY" in result.stderr and "Traceback" not in result.stderr
