"""``hub mappings lint|test|schema`` and ``hub convert --mapping``, run as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from connectors._testing import run_hub
from hub.mappings import jsonschema
from tests.conftest import REPO

MAPPING = """\
version: 1
name: acme
measurements:
  - each: readings
    type: "'heart-rate'"
    time: item.at
    device: {system: "'urn:acme'", value: root.serial}
    unit: "'/min'"
    values: {value: item.hr}
"""
PAYLOAD = {"serial": "A-1", "readings": [{"at": "2026-11-20T08:00:00Z", "hr": 61}]}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "mappings" / "types", tmp_path / "types")
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "acme.yaml").write_text(MAPPING)
    (tmp_path / "payload.json").write_text(json.dumps(PAYLOAD))
    return tmp_path


def write_test(root: Path, expect_value: int) -> Path:
    bundle = json.loads(run_hub("convert", "--mapping", str(root / "devices" / "acme.yaml"),
                                str(root / "payload.json")).stdout)
    bundle["entry"][0]["resource"]["valueQuantity"]["value"] = expect_value
    (root / "expected.json").write_text(json.dumps(bundle))
    test = root / "devices" / "acme.test.yaml"
    test.write_text("version: 1\nmapping: acme\ncases:\n  - name: one pulse\n"
                    "    input: ../payload.json\n    expect: ../expected.json\n")
    return test


def test_lint_passes_on_the_shipped_mappings() -> None:
    done = run_hub("mappings", "lint", str(REPO / "mappings"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: ")


def test_lint_lists_every_problem_with_position_and_exits_1(root: Path) -> None:
    (root / "devices" / "acme.yaml").write_text(
        MAPPING.replace("time: item.at", "time: item.at[").replace("version: 1", "version: 3"))
    (root / "devices" / "other.yaml").write_text("version: 1\nname: other\nmeasurements: []\n")
    done = run_hub("mappings", "lint", str(root))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert f"{root}/devices/acme.yaml:1:1: version: Value error, unsupported version 3; this " \
           "hub reads (1,)" in lines
    assert any(line.startswith(f"{root}/devices/acme.yaml:6:5: measurements[0].time: ")
               for line in lines), lines
    assert any(line.startswith(f"{root}/devices/other.yaml:3:1: measurements: ")
               for line in lines), lines
    assert "3 problem(s)" in done.stderr


def test_lint_one_file_and_a_golden_test_naming_an_unknown_mapping(root: Path) -> None:
    assert run_hub("mappings", "lint", str(root / "devices" / "acme.yaml")).returncode == 0
    (root / "devices" / "x.test.yaml").write_text(
        "version: 1\nmapping: nope\ncases:\n  - {name: a, input: ../payload.json}\n")
    done = run_hub("mappings", "lint", str(root))
    assert done.returncode == 1
    assert f"{root}/devices/x.test.yaml: mapping: no device mapping named 'nope'" in done.stdout


def test_test_prints_pass_per_case_and_a_summary(root: Path) -> None:
    test = write_test(root, 61)
    done = run_hub("mappings", "test", str(test))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-2:] == [f"PASS {test}: one pulse", "1 passed, 0 failed"]


def test_test_shows_the_difference_and_exits_1(root: Path) -> None:
    test = write_test(root, 62)
    done = run_hub("mappings", "test", str(root))
    assert done.returncode == 1
    assert f"FAIL {test}: one pulse" in done.stdout
    assert "    entry[0].valueQuantity.value: expected 62, got 61" in done.stdout
    assert done.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_test_update_rewrites_the_expected_file(root: Path) -> None:
    test = write_test(root, 62)
    assert run_hub("mappings", "test", "--update", str(test)).returncode == 0
    assert run_hub("mappings", "test", str(test)).returncode == 0


def test_shipped_golden_tests_pass() -> None:
    done = run_hub("mappings", "test")
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1].endswith(" passed, 0 failed")


def test_schema_regenerates_into_the_folder(tmp_path: Path) -> None:
    done = run_hub("mappings", "schema", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in jsonschema.SCHEMAS:
        schema = json.loads((tmp_path / "schema" / name).read_text())
        assert schema["$schema"].startswith("https://json-schema.org/")
    assert "3 changed" in done.stdout


def test_committed_schemas_equal_a_fresh_generation() -> None:
    stale = jsonschema.stale(REPO / "mappings" / "schema")
    assert not stale, f"regenerate with `hub mappings schema`: {stale}"


def test_convert_with_mapping_prints_the_observations(root: Path) -> None:
    done = run_hub("convert", "--mapping", str(root / "devices" / "acme.yaml"),
                   str(root / "payload.json"))
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)["entry"]
    assert entry["resource"]["code"]["coding"][0]["code"] == "8867-4"
    assert entry["resource"]["valueQuantity"]["value"] == 61


def test_convert_with_a_broken_mapping_shows_its_problems(root: Path) -> None:
    (root / "devices" / "acme.yaml").write_text(MAPPING.replace("{value: item.hr}",
                                                                "{value: 'item.hr['}"))
    done = run_hub("convert", "--mapping", str(root / "devices" / "acme.yaml"),
                   str(root / "payload.json"))
    assert done.returncode == 1
    assert f"{root}/devices/acme.yaml:9:14: measurements[0].values.value:" in done.stderr


def test_convert_with_mapping_reports_refused_items_and_wraps_an_account(
    root: Path, tmp_path: Path
) -> None:
    withings = REPO / "mappings" / "devices" / "withings.yaml"
    payload = REPO / "fixtures" / "devices" / "withings" / "withings-body-measures-only-goal.json"
    done = run_hub("convert", "--mapping", str(withings), "--account", "42", str(payload))
    assert done.returncode == 1
    assert "user objective" in done.stderr
    bare = run_hub("convert", "--mapping", str(withings), str(payload))  # not in the envelope
    assert bare.returncode == 1 and "holds no readings" in bare.stderr
