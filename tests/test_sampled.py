"""High-rate readings grouped into one SampledData Observation per period (a mapping's `sampled`),
late readings merged into the stored period, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.observation import Observation
from sqlalchemy import select

from connectors._testing import run_hub
from hub.errors import MappingError
from hub.mappings.catalogue import load_mapping_set
from hub.mappings.layouts import SampledGrouping
from hub.normalize.sampled import data_token, locate, merge_data, parse_data
from hub.runtime import Hub
from hub.store import inbox
from hub.store.models import Resource
from hub.telemetry import Telemetry
from hub.worker import drain
from tests.conftest import REPO, make_settings

HOUR = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
GROUPING = "sampled:\n  cgm-glucose: {every: PT5M, per: PT1H}\n"


def grouped_mappings(root: Path, extra: str = GROUPING) -> Path:
    """A copy of the built-in mappings whose canonical source (hub.yaml) groups CGM readings."""
    target = root / "mappings"
    shutil.copytree(REPO / "mappings", target)
    hub_yaml = target / "devices" / "hub.yaml"
    hub_yaml.write_text(hub_yaml.read_text() + extra)
    return target


@pytest.fixture
def grouped_hub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    built = Hub.build(make_settings(db_url, mappings_dir=grouped_mappings(tmp_path)),
                      Telemetry.disabled())
    yield built
    built.engine.dispose()


def cgm(*minutes_values: tuple[float, float], device: str = "cgm-1",
        patient: str = "pat-cgm") -> dict[str, Any]:
    """A canonical message of CGM readings at HOUR + minutes."""
    readings = [{"type": "cgm-glucose", "unit": "mg/dL", "value": value,
                 "time": (HOUR + timedelta(minutes=minute)).isoformat()}
                for minute, value in minutes_values]
    return {"device": {"id": device}, "patient": {"id": patient}, "readings": readings}


def post(hub: Hub, body: dict[str, Any]) -> str:
    return inbox.receive(hub.engine, source="hub", channel="http",
                         content_type="application/json", body=orjson.dumps(body)).message_id


def observations(hub: Hub) -> list[tuple[str, int, dict[str, Any]]]:
    with hub.engine.connect() as conn:
        rows = conn.execute(select(Resource.res_id, Resource.version_id, Resource.content)
                            .where(Resource.res_type == "Observation")
                            .order_by(Resource.effective)).all()
    return [(r.res_id, r.version_id, orjson.loads(r.content)) for r in rows]


# -- the period arithmetic -----------------------------------------------------------------------

def test_a_reading_lands_in_the_slot_of_its_utc_period() -> None:
    grouping = SampledGrouping(every=timedelta(minutes=5), per=timedelta(hours=1))
    window, slot = locate(datetime(2026, 11, 20, 12, 37, 30, tzinfo=UTC), grouping)
    assert window.start == datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 11, 20, 12, 59, 59, 999000, tzinfo=UTC)
    assert (slot, window.slots, window.every_ms) == (7, 12, 300_000)
    # an offset time is the same instant: 07:37:30-05:00 is 12:37:30Z
    offset = datetime.fromisoformat("2026-11-20T07:37:30-05:00")
    assert locate(offset, grouping) == (window, 7)
    daily = SampledGrouping(every=timedelta(minutes=15), per=timedelta(days=1))
    window, slot = locate(datetime(1969, 12, 31, 23, 59, tzinfo=UTC), daily)
    assert window.start == datetime(1969, 12, 31, tzinfo=UTC) and slot == 95


def test_groupings_that_do_not_divide_into_slots_are_refused() -> None:
    for every, per in ((timedelta(minutes=7), timedelta(hours=1)),
                       (timedelta(0), timedelta(hours=1)),
                       (timedelta(seconds=1), timedelta(days=1))):  # 86,400 points
        with pytest.raises(ValueError):
            SampledGrouping(every=every, per=per)


def test_data_tokens_and_merging_keep_stored_slots() -> None:
    assert [data_token(v) for v in (101, 5.5, 1e-05, 123456789.0)] == \
        ["101", "5.5", "0.00001", "123456789.0"]
    stored = parse_data("E 101 E L", 6)
    assert stored == ["E", "101", "E", "L", "E", "E"]
    merged, changed = merge_data(stored, {0: "99", 1: "101"})
    assert merged == ["99", "101", "E", "L", "E", "E"] and changed
    assert merge_data(merged, {1: "101"}) == (merged, False)


# -- the mapping file ----------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "problem"), [
    ("sampled:\n  no-such-type: {every: PT5M, per: PT1H}\n", "unknown measurement type"),
    ("sampled:\n  blood-pressure: {every: PT5M, per: PT1H}\n", "only single-quantity types"),
    ("sampled:\n  cgm-glucose: {every: PT7M, per: PT1H}\n", "whole multiple"),
])
def test_a_bad_grouping_is_refused_with_its_position(tmp_path: Path, extra: str,
                                                      problem: str) -> None:
    root = grouped_mappings(tmp_path, extra)
    with pytest.raises(MappingError) as caught:
        load_mapping_set(root)
    found = [str(p) for p in caught.value.problems]
    assert any("devices/hub.yaml:" in p and "sampled" in p and problem in p for p in found), found


def test_lint_warns_when_a_grouped_type_is_one_the_rules_read(tmp_path: Path) -> None:
    root = grouped_mappings(tmp_path)  # groups cgm-glucose, which cgm-consensus and more read
    linted = run_hub("mappings", "lint", str(root))
    assert linted.returncode == 0, linted.stderr  # a warning, not a problem
    (warning,) = [line for line in linted.stderr.splitlines() if "warning" in line]
    assert warning.startswith(f"{root}/devices/hub.yaml:")
    assert "sampled.cgm-glucose: warning: grouped readings are invisible" in warning
    assert "cgm-consensus" in warning and "cgm-silence" in warning
    plain = run_hub("mappings", "lint", str(REPO / "mappings"))  # groups nothing: silent
    assert plain.returncode == 0 and "warning" not in plain.stderr, plain.stderr


# -- through the pipeline and the store ----------------------------------------------------------

def test_readings_of_a_period_become_one_sampled_data_observation(grouped_hub: Hub) -> None:
    post(grouped_hub, cgm((2, 110), (7, 95.5), (31, 130), (65, 140)))
    drain(grouped_hub.pipeline, grouped_hub.engine, 10)
    stored = observations(grouped_hub)
    assert len(stored) == 2  # 10:xx and 11:xx
    _, version, first = stored[0]
    Observation.model_validate(first)  # valid FHIR R4 (R4B has the same SampledData)
    assert version == 1 and first["status"] == "final"
    assert first["effectivePeriod"] == {"start": "2026-11-20T10:00:00+00:00",
                                        "end": "2026-11-20T10:59:59.999+00:00"}
    sampled = first["valueSampledData"]
    assert sampled["origin"] == {"value": 0, "unit": "mg/dl",
                                 "system": "http://unitsofmeasure.org", "code": "mg/dL"}
    assert (sampled["period"], sampled["dimensions"]) == (300_000, 1)
    assert sampled["data"] == "110 95.5 E E E E 130 E E E E E"
    assert first["code"]["coding"][0]["code"] == "99504-3"
    assert "profile" not in first["meta"]  # the CGM sensor-reading profile needs valueQuantity
    assert first["subject"]["reference"].startswith("Patient/")
    assert stored[1][2]["valueSampledData"]["data"] == "E 140 E E E E E E E E E E"


def test_a_late_reading_is_merged_into_its_stored_period(grouped_hub: Hub) -> None:
    post(grouped_hub, cgm((0, 100), (5, 105)))
    drain(grouped_hub.pipeline, grouped_hub.engine, 10)
    (rid, _, _), = observations(grouped_hub)
    late = post(grouped_hub, cgm((50, 150), (5, 106)))  # a new slot, and a corrected one
    drain(grouped_hub.pipeline, grouped_hub.engine, 10)
    (rid_after, version, obs), = observations(grouped_hub)
    assert rid_after == rid and version == 2
    assert obs["valueSampledData"]["data"] == "100 106 E E E E E E E E 150 E"
    assert obs["status"] == "amended"  # as iomt-fhir marks a merged period
    assert obs["meta"]["source"] == f"urn:uuid:{late}"
    # replaying the late message changes nothing: no new version
    inbox.requeue(grouped_hub.engine, status="processed", message_ids=[late])
    drain(grouped_hub.pipeline, grouped_hub.engine, 10)
    assert observations(grouped_hub)[0][1] == 2


def test_other_devices_patients_and_implausible_readings_stay_apart(grouped_hub: Hub) -> None:
    post(grouped_hub, cgm((0, 100)))
    post(grouped_hub, cgm((0, 100), device="cgm-2"))
    post(grouped_hub, cgm((10, 5000)))  # above the plausible range: held alone, not merged
    drain(grouped_hub.pipeline, grouped_hub.engine, 10)
    stored = [obs for _, _, obs in observations(grouped_hub)]
    sampled = [o for o in stored if "valueSampledData" in o]
    single = [o for o in stored if "valueQuantity" in o]
    assert len(sampled) == 2 and {o["valueSampledData"]["data"] for o in sampled} == \
        {"100 E E E E E E E E E E E"}
    assert len(single) == 1 and single[0]["status"] == "preliminary"


def test_heart_rate_of_the_same_source_is_not_grouped(grouped_hub: Hub) -> None:
    body = cgm((0, 100))
    body["readings"].append({"type": "heart-rate", "unit": "/min", "value": 70,
                             "time": HOUR.isoformat()})
    post(grouped_hub, body)
    drain(grouped_hub.pipeline, grouped_hub.engine, 10)
    kinds = sorted(next(k for k in obs if k.startswith("value"))
                   for _, _, obs in observations(grouped_hub))
    assert kinds == ["valueQuantity", "valueSampledData"]


def test_concurrent_workers_merge_into_one_period_without_losing_readings(
        grouped_hub: Hub) -> None:
    """Two workers (two hubs, two connection pools), each with a message holding a reading of
    the same period, at once: every period ends with both readings (the advisory lock on
    PostgreSQL; SQLite has one writer)."""
    post(grouped_hub, cgm((-120, 90)))  # identities exist first: the race is on the periods
    drain(grouped_hub.pipeline, grouped_hub.engine, 10)
    rounds = 6
    first = [post(grouped_hub, cgm((60 * r, 100 + r))) for r in range(rounds)]
    second = [post(grouped_hub, cgm((60 * r + 30, 200 + r))) for r in range(rounds)]
    other = Hub.build(grouped_hub.settings, Telemetry.disabled())
    errors: list[BaseException] = []
    together = threading.Barrier(2, timeout=60)  # each round's two messages start at once

    def work(hub: Hub, ids: list[str]) -> None:
        try:
            for message_id in ids:
                together.wait()
                assert hub.pipeline.run_batch(hub.engine, 1, only=[message_id]) == 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(grouped_hub, first)),
               threading.Thread(target=work, args=(other, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    other.engine.dispose()
    assert not errors
    datas = [obs["valueSampledData"]["data"].split(" ")
             for _, _, obs in observations(grouped_hub)][1:]
    assert len(datas) == rounds
    for r, data in enumerate(datas):
        assert (data[0], data[6]) == (str(100 + r), str(200 + r))
