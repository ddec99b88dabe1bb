"""``hub registry`` (SQLite and PostgreSQL): output, exit codes, one-line errors without a
traceback, and the registry it leaves behind.

Most calls run ``hub.cli.main`` in this process (argv, environment, exit code, stdout and
stderr as a user gets them): a ``hub`` subprocess costs seconds of imports on this machine. The
last test runs the real command.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hub.cli import main
from hub.contracts import Identifier
from hub.identity import admin
from hub.store.db import make_engine
from tests.test_cli import run

CUFF, ANN, BOB = "urn:acme:serial|AC-1", "urn:oid:1.2.3|MRN-1", "urn:oid:1.2.3|MRN-2"


@pytest.fixture
def hub(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``hub registry ARGS`` → CompletedProcess-like (returncode, stdout, stderr)."""
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    monkeypatch.delenv("HUB_DESTINATIONS_FILE", raising=False)

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(sys, "argv", ["hub", "registry", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return call


def one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hub: "), result.stderr
    assert text in result.stderr and "Traceback" not in result.stderr


def test_register_assign_move_and_list(hub, db_url: str) -> None:
    made = hub("device", CUFF, "--type", "urn:iso:std:iso:11073:10101|528391",
               "--model", "BP-200", "--manufacturer", "Acme")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("registered Device/")
    for patient in (ANN, BOB):
        done = hub("patient", patient, "--family", "Doe", "--given", "Jo",
                   "--birth-date", "1950-01-02", "--gender", "unknown")
        assert done.returncode == 0 and done.stdout.startswith("registered Patient/"), done
    first = hub("assign", CUFF, ANN, "--start", "2026-11-20T08:00:00Z")
    assert first.returncode == 0 and "until open" in first.stdout, first
    one_line_error(hub("assign", CUFF, BOB, "--start", "2026-11-20T10:00:00Z"),
                   "already assigned from 2026-11-20T08:00:00Z open-ended")
    ended = hub("unassign", CUFF, "--at", "2026-11-20T05:00:00-05:00")
    assert ended.returncode == 0 and "ended at 2026-11-20T10:00:00Z" in ended.stdout, ended
    assert hub("assign", CUFF, BOB, "--start", "2026-11-20T10:00:00Z").returncode == 0
    listed = hub("list", "--device", CUFF)
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(r[2], r[4], r[5]) for r in rows] == [
        (CUFF, "2026-11-20T08:00:00Z", "2026-11-20T10:00:00Z"),
        (CUFF, "2026-11-20T10:00:00Z", "open")]
    at_nine = hub("list", "--at", "2026-11-20T09:00:00Z").stdout.splitlines()
    assert len(at_nine) == 1 and at_nine[0].startswith(rows[0][0] + "\t")
    # What the CLI wrote is what the library reads.
    engine = make_engine(db_url)
    try:
        views = admin.list_assignments(engine, patient=Identifier("urn:oid:1.2.3", "MRN-2"))
    finally:
        engine.dispose()
    assert [v.assignment.id for v in views] == [int(rows[1][0])]


def test_bad_input_is_one_line_on_stderr(hub) -> None:
    one_line_error(hub("device", "no-separator"), "system|value")
    one_line_error(hub("device", CUFF, "--type", "just-text"), "--type")
    one_line_error(hub("patient", ANN, "--gender", "robot"), "--gender")
    one_line_error(hub("patient", ANN, "--birth-date", "02/01/1950"), "--birth-date")
    one_line_error(hub("assign", CUFF, ANN), "no Device is registered")
    assert hub("device", CUFF).returncode == 0
    missing = hub("assign", CUFF, ANN)
    one_line_error(missing, "no Patient is registered")
    assert "MRN-1" not in missing.stderr
    one_line_error(hub("assign", CUFF, ANN, "--start", "2026-11-20T08:00"), "offset")
    one_line_error(hub("unassign", CUFF, "--at", "yesterday"), "ISO 8601")
    one_line_error(hub("unassign", CUFF), "no assignment in force")


@pytest.mark.slow
def test_the_real_command_exits_non_zero_with_one_line(db_url: str) -> None:
    env = {"HUB_DATABASE_URL": db_url}
    assert run("registry", "device", CUFF, env=env).returncode == 0
    refused = run("registry", "assign", CUFF, ANN, "--start", "2026-11-20T08:00:00Z", env=env)
    one_line_error(refused, "no Patient is registered")
