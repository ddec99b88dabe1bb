"""``hub convert hl7v2 FILE...`` (batch files split) and ``hub hl7 validate FILE``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.hl7v2_fhir.conftest import CORPUS_HL7, FIXTURES

HUB = str(Path(sys.executable).parent / "hub")


def hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HUB, *args], capture_output=True, text=True, timeout=300)


def test_convert_prints_a_bundle_for_several_files_and_a_batch() -> None:
    done = hub("convert", "hl7v2", str(FIXTURES / "ipf_pcd01_bp-request.hl7"),
               str(CORPUS_HL7 / "pyhl7_edge_batch-file_FHS-BHS-3msgs.hl7"))
    assert done.returncode == 0, done.stderr
    bundle = orjson.loads(done.stdout)
    kinds = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds.count("Observation") == 1 and kinds.count("Patient") == 2


def test_convert_reports_refusals_and_exits_1() -> None:
    done = hub("convert", "hl7v2", str(CORPUS_HL7 / "ipf_edge_unknown-message-type-ABC-XYZ.hl7"))
    assert done.returncode == 1
    assert "unsupported message type" in done.stderr
    assert orjson.loads(done.stdout)["entry"] == []


def test_validate_against_the_standard() -> None:
    good = hub("hl7", "validate", str(FIXTURES / "ipf_pcd01_bp-request.hl7"))
    assert good.returncode == 0 and good.stdout.strip().endswith(": valid"), good.stdout
    bad = hub("hl7", "validate", "--no-warnings",
              str(CORPUS_HL7 / "ipf_edge_adt-a01_incomplete-no-pid.hl7"))
    assert bad.returncode == 1
    assert "error: Missing required child ADT_A01.PID" in bad.stdout
    batch = hub("hl7", "validate", "--no-warnings",
                str(CORPUS_HL7 / "pyhl7_edge_batch-file_FHS-BHS-3msgs.hl7"))
    assert batch.stdout.count("valid") == 3, batch.stdout


def test_validate_never_prints_values() -> None:
    done = hub("hl7", "validate", str(CORPUS_HL7 / "pyhl7_adt-a01_v23_quoted-nulls-repeats.hl7"))
    assert "RUFUSS" not in done.stdout and "2148790" not in done.stdout
