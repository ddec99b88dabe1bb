"""``hub import``: real corpus exports and generated ones into the real inbox, on SQLite and
PostgreSQL; resumed after SIGKILL without duplicates; bounded memory on large files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from ruamel.yaml import YAML
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from hub.channels.file_import import FileImporter, FileReport
from hub.channels.file_readers import BOM
from hub.contracts import Identifier
from hub.errors import DataError
from hub.fhir.ids import registry_id
from hub.runtime import Hub
from hub.store import inbox
from hub.store.db import normalize_url, upgrade
from hub.store.models import ImportCheckpoint, InboundMessage, Resource
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import CORPUS, REPO, TEST_SECRET, make_settings

SHARE = CORPUS / "devices" / "dexcom-share"


def registry_id_of(patient: str) -> str:
    return registry_id("Patient", Identifier("urn:iomt-fhir-hub:patient", patient))
IOMT = CORPUS / "devices" / "iomt-fhir" / "payloads"
HUB = [sys.executable, "-m", "hub"]


def run_cli(db_url: str, *args: str, **popen: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUB, *args], env=cli_env(db_url), cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False, **popen)


def cli_env(db_url: str) -> dict[str, str]:
    return {**os.environ, "HUB_DATABASE_URL": db_url, "HUB_ENV": "test",
            "HUB_SECRET_KEY": TEST_SECRET, "HUB_MAPPINGS_DIR": str(REPO / "mappings"),
            "OTEL_TRACES_EXPORTER": "none"}


def messages(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(InboundMessage.id, InboundMessage.status,
                                        InboundMessage.error, InboundMessage.body,
                                        InboundMessage.channel)
                                 .order_by(InboundMessage.seq)).all())


def importer(hub: Hub, source: str, layout: str | None = None, chunk: int = 500,
             **variables: str) -> FileImporter:
    mapping = hub.mappings().devices[hub.connectors.get(source).mapping_name].mapping
    return FileImporter(hub.engine, hub.connectors.get(source), layout_name=layout,
                        layout=mapping.files[layout] if layout else None, variables=variables,
                        chunk=chunk, max_body=hub.settings.max_body_bytes)


def share_history(tmp_path: Path) -> tuple[Path, int]:
    """The real Share readings recorded in the corpus cassettes (pydexcom), joined into one
    history array as a Share backfill export would be."""
    readings: list[Any] = orjson.loads((SHARE / "ReadPublisherLatestGlucoseValues_response.json")
                                       .read_bytes())
    for cassette in sorted(SHARE.glob("cassette_*.yaml")):
        for exchange in YAML(typ="safe").load(cassette.read_text())["interactions"]:
            body = exchange["response"]["body"]["string"]
            if "ReadPublisherLatestGlucoseValues" in exchange["request"]["uri"] and \
                    body.startswith("["):
                readings.extend(orjson.loads(body))
    path = tmp_path / "share-history.json"
    path.write_bytes(orjson.dumps(readings))
    return path, len({r["WT"] for r in readings})


# -- real corpus exports -------------------------------------------------------------------------

def test_a_dexcom_share_history_from_the_corpus_becomes_observations(hub: Hub,
                                                                     tmp_path: Path) -> None:
    path, distinct = share_history(tmp_path)
    report = importer(hub, "dexcom", "share", chunk=2, account="share-1", patient="p-1").run(path)
    assert report.ok and report.items == len(orjson.loads(path.read_bytes())) and distinct > 1
    stored = messages(hub.engine)
    assert {m.channel for m in stored} == {"file"} and len(stored) == report.stored
    first = orjson.loads(stored[0].body)
    assert first["account"] == "share-1" and first["patient"] == {"id": "p-1"}
    drain(hub.pipeline, hub.engine, 10)
    assert {m.status for m in messages(hub.engine)} == {"processed"}
    with hub.engine.connect() as conn:
        codes = conn.execute(select(Resource.code).where(Resource.res_type == "Observation")).all()
    # the cassettes repeat readings: each distinct reading is one Observation (deterministic ids)
    assert len(codes) == distinct and {c.code for c in codes} == {"99504-3"}


def test_a_dexcom_clarity_export_becomes_cgm_observations_at_local_time(hub: Hub) -> None:
    """The Clarity CSV's EGV rows only (preamble, calibration and insulin rows skipped), read on
    the zone given across a DST change; Low/High kept as < 40 / > 400 mg/dL; a blank value
    refused by line, never dropped."""
    path = REPO / "fixtures" / "devices" / "dexcom" / "clarity" / "clarity-export-synthetic.csv"
    report = importer(hub, "dexcom", "clarity", user="u-1", patient="p-1",
                      time_zone="America/New_York").run(path)
    assert report.ok and report.items == 6 and report.stored == 1
    drain(hub.pipeline, hub.engine, 10)
    (message,) = messages(hub.engine)
    assert message.status == "partial"
    assert "neither a number nor Low/High" in (message.error or "")
    with hub.engine.connect() as conn:
        found = [orjson.loads(c) for (c,) in conn.execute(
            select(Resource.content).where(Resource.res_type == "Observation",
                                           Resource.code == "99504-3")).all()]
    got = sorted((o["effectiveDateTime"], o["valueQuantity"]["value"],
                  o["valueQuantity"].get("comparator")) for o in found)
    assert got == [("2026-03-08T01:50:00-05:00", 112, None),
                   ("2026-03-08T01:55:00-05:00", 108, None),
                   ("2026-03-08T03:00:00-04:00", 40, "<"),  # "Low", after spring-forward
                   ("2026-03-08T12:30:00-04:00", 400, ">"),  # "High"
                   ("2026-03-08T12:40:00-04:00", 251.0, None)]
    assert {o["subject"]["reference"] for o in found} == {f"Patient/{registry_id_of('p-1')}"}


def test_a_clarity_payload_without_its_user_is_refused_at_intake(hub: Hub) -> None:
    with pytest.raises(DataError, match="user missing") as caught:
        hub.connectors.get("dexcom").decode(b'{"clarity": []}', "application/json")
    assert caught.value.location == "user"


def test_importing_the_same_file_again_is_a_no_op(hub: Hub, tmp_path: Path) -> None:
    path, _ = share_history(tmp_path)
    first = importer(hub, "dexcom", "share", chunk=2, account="a").run(path)
    assert first.stored >= 2
    again = importer(hub, "dexcom", "share", chunk=2, account="a").run(path)
    assert again.already_done and again.stored == 0
    copy = tmp_path / "renamed.json"  # a file is known by its content, not its name
    copy.write_bytes(path.read_bytes())
    assert importer(hub, "dexcom", "share", chunk=2, account="a").run(copy).already_done
    redo = importer(hub, "dexcom", "share", chunk=2, account="a")
    redo.restart = True
    replay = redo.run(path)  # read again from the start: every chunk is already stored
    assert replay.items == first.items and replay.stored == 0
    assert len(messages(hub.engine)) == first.stored
    # another account is another import of the same bytes
    assert importer(hub, "dexcom", "share", chunk=2, account="b").run(path).stored == first.stored


def test_iomt_corpus_payloads_import_whole_and_as_ndjson_lines(hub: Hub, tmp_path: Path) -> None:
    files = sorted(IOMT.glob("data_*.json"))
    reports = [importer(hub, "iomt").run(f) for f in files]
    assert all(r.ok and r.items == 1 and r.stored == 1 for r in reports)
    lines = tmp_path / "iomt.ndjson"
    payloads = [orjson.loads(f.read_bytes().removeprefix(BOM)) for f in files]  # some have one
    lines.write_bytes(b"\n".join(orjson.dumps(p) for p in payloads))
    report = importer(hub, "iomt").run(lines)
    assert report.ok and report.items == len(files)
    bodies = [orjson.loads(m.body) for m in messages(hub.engine)]
    assert bodies[:len(files)] == bodies[len(files):]  # the same payloads, one message each
    drain(hub.pipeline, hub.engine, 10)
    assert inbox.STATUS_RECEIVED not in {m.status for m in messages(hub.engine)}


def test_a_bare_vendor_answer_is_kept_as_failed_with_the_connectors_reason(hub: Hub) -> None:
    """iHealth answers must come in the account envelope: without a layout that adds it, the
    real corpus file is refused by the connector's intake check, kept, and reported."""
    path = CORPUS / "devices" / "shimmer" / "ihealth" / "ihealth-bp.json"
    refused: list[tuple[str, str]] = []
    imp = importer(hub, "ihealth")
    imp.listener.refused = lambda p, label, reason, mid: refused.append((label, reason))
    report = imp.run(path)
    assert not report.ok and report.refused == 1
    assert refused and "account envelope" in refused[0][1]
    (stored,) = messages(hub.engine)
    assert stored.status == "failed" and stored.body == path.read_bytes()
    assert stored.error.startswith("$: ") and "account envelope" in stored.error


# -- generated exports, through the CLI ------------------------------------------------------------

def test_cli_reports_bad_rows_by_line_goes_on_and_exits_1(db_url: str, tmp_path: Path) -> None:
    good = tmp_path / "readings.csv"
    good.write_text("time,type,value,unit\n"
                    "2026-11-20T08:00:00Z,heart-rate,71,/min\n"
                    "2026-11-20T08:01:00Z,heart-rate,n/a,/min\n"      # line 3: not a number
                    "2026-11-20T08:02:00Z,heart-rate,72,furlong\n"    # line 4: the mapping refuses
                    "2026-11-20T08:03:00Z,heart-rate,73,/min\n")
    missing = tmp_path / "other.csv"
    missing.write_text("when,what\n1,2\n")
    result = run_cli(db_url, "import", "hub", "--layout", "readings-csv", "--set",
                     "device=cuff-1", "--set", "patient=p-1", "--process", "--chunk", "2",
                     str(good), str(missing))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3, errors
    assert errors[0].startswith(f"{good}:3: column 'value' is not a number (kept as message ")
    assert errors[1].startswith(f"{good}:4: unit: unit not accepted: 'furlong'")
    assert errors[2] == f"{missing}: the header lacks the layout's column(s) 'time', 'type', " \
                        "'unit', 'value'"
    assert f"{good}: 3 items in 3 messages, 1 refused" in result.stdout
    engine = create_engine(normalize_url(db_url))
    statuses = sorted(m.status for m in messages(engine))
    engine.dispose()
    assert statuses == ["failed", "partial", "processed"]


def test_cli_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("[]")
    url = f"sqlite:///{tmp_path}/never-written.db"  # usage is checked before any write
    for args, text in ((["dexcom", "--layout", "nope", str(path)],
                        "no layout 'nope' in the 'dexcom' mapping's `files` "
                        "(it has: clarity, share, v3)"),
                       (["dexcom", "--layout", "share", str(path)], "--set account=...")):
        result = run_cli(url, "import", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- resumable: killed mid-import, started again ---------------------------------------------------

def generated(tmp_path: Path, fmt: str, n: int) -> Path:
    """``n`` canonical heart-rate readings, each with a unique id, as json / ndjson / csv."""
    rows = [{"id": f"r{i}", "type": "heart-rate", "value": 50 + i % 50, "unit": "/min",
             "time": f"2026-01-{1 + i // 86400 % 28:02d}T{i // 3600 % 24:02d}:"
                     f"{i // 60 % 60:02d}:{i % 60:02d}Z"} for i in range(n)]
    path = tmp_path / f"history.{fmt}"
    if fmt == "json":
        path.write_bytes(orjson.dumps({"device": {"id": "cuff-big"}, "readings": rows}))
    elif fmt == "ndjson":
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    else:
        path.write_text("id,time,type,value,unit\n" + "".join(
            f"{r['id']},{r['time']},{r['type']},{r['value']},{r['unit']}\n" for r in rows))
    return path


LAYOUTS = {"json": "readings-json", "ndjson": "readings-ndjson", "csv": "readings-csv-ids"}


def layout_mappings(tmp_path: Path) -> Path:
    """The built-in mappings plus two test layouts of the canonical source."""
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    hub_yaml = root / "devices" / "hub.yaml"
    text = hub_yaml.read_text().replace("files:\n", """files:
  readings-json: {format: json, items: readings}
  readings-csv-ids:
    format: csv
    columns: {id: id, time: time, type: type, value: {column: value, type: number}, unit: unit}
    payload: {device: {id: "{device}"}, readings: "{items}"}
""")
    hub_yaml.write_text(text)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "csv"])  # NDJSON resumes by offset as CSV does
def test_an_import_killed_mid_way_resumes_without_duplicates(db_url: str, tmp_path: Path,
                                                             fmt: str) -> None:
    n = 20_000
    path = generated(tmp_path, fmt, n)
    env = {**cli_env(db_url), "HUB_MAPPINGS_DIR": str(layout_mappings(tmp_path))}
    args = [*HUB, "import", "hub", "--layout", LAYOUTS[fmt], "--set", "device=cuff-big",
            "--chunk", "100", str(path)]
    engine = create_engine(normalize_url(db_url))
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while checkpoint_position(engine) == 0:  # let it commit some chunks, then kill it hard
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    interrupted = checkpoint(engine)
    assert interrupted.status == "running" and 0 < interrupted.items < n
    again = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed at" in again.stdout
    ids = [r["id"] for m in messages(engine) for r in orjson.loads(m.body)["readings"]]
    assert len(ids) == n and len(set(ids)) == n  # every reading once, none twice
    done = checkpoint(engine)
    assert done.status == "done" and done.items == n
    engine.dispose()


def checkpoint(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(ImportCheckpoint)).one()


def checkpoint_position(engine: Engine) -> int:
    with engine.connect() as conn:
        found = conn.execute(select(ImportCheckpoint.position)).scalar()
    return int(found or 0)


# -- bounded memory ------------------------------------------------------------------------------

@pytest.fixture
def layout_hub(tmp_path: Path) -> Iterator[Hub]:
    """A fresh SQLite hub: what is measured is the reader's memory, not the database's."""
    url = f"sqlite:///{tmp_path}/memory.db"
    upgrade(url)
    built = Hub.build(make_settings(url, mappings_dir=layout_mappings(tmp_path)),
                      Telemetry.disabled())
    yield built
    built.engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_memory_stays_bounded_whatever_the_file_size(layout_hub: Hub, tmp_path: Path,
                                                     fmt: str) -> None:
    """Python's peak allocation while importing a file ten times larger stays the same
    (tracemalloc: measured ~2-3.5 MB for 20,000 and 200,000 items alike)."""
    peaks: list[tuple[int, int]] = []
    for n in (4_000, 40_000):
        folder = tmp_path / str(n)
        folder.mkdir()
        path = generated(folder, fmt, n)
        imp = importer(layout_hub, "hub", LAYOUTS[fmt], device="cuff-big")
        tracemalloc.start()
        report: FileReport = imp.run(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert report.ok and report.items == n
        peaks.append((path.stat().st_size, peak))
    (small_size, small_peak), (large_size, large_peak) = peaks
    assert large_size > 9 * small_size
    assert large_peak < 1.5 * small_peak + 1_000_000, peaks  # reading it whole: 10x


# Measures its child's peak RSS from a fresh small process: a child forked from pytest would
# report pytest's own peak (the kernel counts the parent's pages the child had before exec).
_PEAK_RSS = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


@pytest.mark.slow
def test_the_import_process_rss_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """Peak RSS of the whole ``hub import`` process (C parsers and SQLite included)."""
    url = f"sqlite:///{tmp_path}/hub.db"
    upgrade(url)
    env = {**cli_env(url), "HUB_MAPPINGS_DIR": str(layout_mappings(tmp_path))}
    peaks: list[int] = []
    for n in (5_000, 60_000):
        folder = tmp_path / str(n)
        folder.mkdir()
        path = generated(folder, "json", n)
        done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *HUB, "import", "hub",
                               "--layout", "readings-json", str(path)],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        peaks.append(int(done.stdout.split()[-1]) * 1024)  # KiB on Linux
    small, large = peaks
    # a 12x larger file (~5 MB: read whole, its objects alone would take ~50 MB more)
    assert large - small < 16 * 1024 * 1024, peaks
