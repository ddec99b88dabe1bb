"""The device-mapping language's features, one small mapping each (hub.mappings.extract)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from jmespath.exceptions import JMESPathError

from hub.errors import DataError
from hub.mappings.extract import CompiledDeviceMapping
from hub.mappings.functions import compile_expression
from hub.mappings.schema import DeviceMapping
from hub.mappings.times import parse_time, zone

DEVICE = {"system": "'urn:test'", "value": "'dev-1'"}


def mapping(*rules: dict[str, Any], refuse: list[dict[str, Any]] | None = None
            ) -> CompiledDeviceMapping:
    spec = DeviceMapping.model_validate({"version": 1, "name": "t", "refuse": refuse or [],
                                         "measurements": list(rules)})
    return CompiledDeviceMapping(spec, "devices/t.yaml")


def rule(**fields: Any) -> dict[str, Any]:
    return {"type": "'heart-rate'", "time": "item.t", "device": DEVICE,
            "values": {"value": "item.v"}, **fields}


@pytest.mark.parametrize(("expression", "data", "expected"), [
    ("exp10(v, u)", {"v": 74126, "u": -3}, 74.126),
    ("exp10(v, u)", {"v": 68, "u": 0}, 68),
    ("exp10(v, u)", {"v": 12, "u": 2}, 1200),
    ("multiply(v, `100`)", {"v": 1.93}, 193.0),
    ("multiply(v, `2.54`)", {"v": 78}, 198.12),
])
def test_exact_arithmetic(expression: str, data: dict[str, Any], expected: float) -> None:
    result = compile_expression(expression).search(data)
    assert result == expected and type(result) is type(expected)


def test_unknown_functions_fail_when_the_file_loads() -> None:
    with pytest.raises(JMESPathError, match="unknown function"):
        compile_expression("scale(v, `3`)")


def test_nested_each_sees_the_parent() -> None:
    m = mapping(rule(each=["groups", "measures"], time="parent.date", time_format="epoch_s",
                     values={"value": "exp10(item.value, item.unit)"}))
    doc = {"groups": [{"date": 0, "measures": [{"value": 615, "unit": -1}]},
                      {"date": 60, "measures": [{"value": 7, "unit": 1}, {"value": 8, "unit": 0}]}]}
    found = m.extract(doc).measurements
    assert [(x.values["value"], x.time.second + 60 * x.time.minute) for x in found] == \
        [(61.5, 0), (70, 60), (8, 60)]
    assert [x.location for x in found] == ["groups/measures[0][0]", "groups/measures[1][0]",
                                           "groups/measures[1][1]"]


def test_item_refusal_keeps_the_reason_and_the_place() -> None:
    m = mapping(rule(each="r", refuse=[{"when": "item.v == `0`", "reason": "0 = not measured"}]))
    out = m.extract({"r": [{"t": "2026-01-01T00:00:00Z", "v": 0},
                           {"t": "2026-01-01T00:01:00Z", "v": 60}]})
    assert [e.message for e in out.errors] == ["0 = not measured"]
    assert out.errors[0].location == "r[0]"
    assert len(out.measurements) == 1


@pytest.mark.parametrize("root", [
    {"device": {"id": "d-1"}, "patient": {"id": "p-1"}},
    {"device": {"id": "d-1"}},  # no patient: readings without one
    {"device": {"id": ""}, "patient": {"id": "p-1"}},  # no device: every reading refused
    {"device": {"id": "d-1", "system": None}, "patient": {"id": "p-1", "system": 7}},
])
def test_identifiers_read_from_the_payload_root_apply_to_each_item(root: dict[str, Any]) -> None:
    """Root-only identifier expressions are evaluated once per payload: each item gets the
    same identifier, or the same error at its own location, as if evaluated per item."""
    ident = {"system": "root.device.system || 'urn:d'", "value": "root.device.id"}
    patient = {"system": "root.patient.system || 'urn:p'", "value": "root.patient.id"}
    m = mapping(rule(each="r", device=ident, patient=patient))
    out = m.extract({**root, "r": [{"t": "2026-01-01T00:00:00Z", "v": 60},
                                   {"t": "2026-01-01T00:01:00Z", "v": 61}]})
    device = root["device"]["id"]
    if not device:
        assert [(e.message, e.location) for e in out.errors] == \
            [("device identifier missing", "r[0]"), ("device identifier missing", "r[1]")]
        return
    assert not out.errors
    assert [(x.device.system, x.device.value) for x in out.measurements] == [("urn:d", "d-1")] * 2
    system = str(root.get("patient", {}).get("system") or "urn:p")
    want = None if "patient" not in root else (system, "p-1")
    assert [x.patient and (x.patient.system, x.patient.value) for x in out.measurements] == \
        [want] * 2


def test_document_refusal_stops_the_message_or_marks_items() -> None:
    whole = mapping(rule(each="r"), refuse=[{"when": "error", "reason": "vendor error"}])
    with pytest.raises(DataError, match="vendor error"):
        whole.extract({"error": "x", "r": []})
    per_item = mapping(rule(each="r[?kind == 'real']"),
                       refuse=[{"each": "r", "when": "item.kind == 'goal'", "reason": "a goal"}])
    out = per_item.extract({"r": [{"kind": "goal"}, {"kind": "real", "t": "2026-01-01T00:00:00Z",
                                                     "v": 1}]})
    assert [(e.location, e.message) for e in out.errors] == [("r[0]", "a goal")]
    assert len(out.measurements) == 1


def test_unit_map_translates_codes_and_refuses_unknown_ones() -> None:
    m = mapping(rule(each="r", unit="root.unit", unit_map={"0": "mm[Hg]", "1": "kPa"}))
    ok = m.extract({"unit": 1, "r": [{"t": "2026-01-01T00:00:00Z", "v": 16}]})
    assert ok.measurements[0].unit == "kPa"
    bad = m.extract({"unit": 7, "r": [{"t": "2026-01-01T00:00:00Z", "v": 16}]})
    assert bad.errors[0].message == "unit code not in the mapping's unit_map"


def test_comparator_marks_a_value_beyond_the_range_and_refuses_anything_else() -> None:
    m = mapping(rule(each="r", comparator="item.c"))
    out = m.extract({"r": [{"t": "2026-01-01T00:00:00Z", "v": 40, "c": "<"},
                           {"t": "2026-01-01T00:01:00Z", "v": 61},
                           {"t": "2026-01-01T00:02:00Z", "v": 9, "c": "about"}]})
    assert [x.comparator for x in out.measurements] == ["<", None]
    assert [(e.location, e.message) for e in out.errors] == [
        ("r[2].comparator", "comparator is not one of <, <=, >=, >")]


def test_expression_errors_at_run_time_are_data_errors() -> None:
    m = mapping(rule(each="r", values={"value": "exp10(item.v, `1`)"}))
    out = m.extract({"r": [{"t": "2026-01-01T00:00:00Z", "v": "12"}]})
    assert out.errors[0].message.startswith("expression failed")


def test_nothing_found_says_so() -> None:
    with pytest.raises(DataError, match="holds no readings"):
        mapping(rule(each="r")).extract({"r": []})


LA = zone("America/Los_Angeles")


@pytest.mark.parametrize(("raw", "fmt", "tz", "expected"), [
    (1433052383, "epoch_s", None, datetime(2015, 5, 31, 6, 6, 23, tzinfo=UTC)),
    ("1436565497687316406", "epoch_ns", None,
     datetime(2015, 7, 10, 21, 58, 17, 687316, tzinfo=UTC)),
    (1745081013817, "epoch_ms", None, datetime(2025, 4, 19, 16, 43, 33, 817000, tzinfo=UTC)),
    # iHealth: the local wall clock written as epoch seconds, placed on the given offset
    (1442491463, "local_epoch_s", "-0800",
     datetime(2015, 9, 17, 12, 4, 23, tzinfo=timezone(timedelta(hours=-8)))),
    ("Date(1745081013817-0400)", "dotnet_date", None,
     datetime(2025, 4, 19, 12, 43, 33, 817000, tzinfo=timezone(timedelta(hours=-4)))),
    ("Date(1745081013817)", "dotnet_date", None,
     datetime(2025, 4, 19, 16, 43, 33, 817000, tzinfo=UTC)),
    ("2015-08-21T00:01:00", "iso8601", "America/New_York",
     datetime(2015, 8, 21, 4, 1, tzinfo=UTC)),
])
def test_time_formats(raw: Any, fmt: str, tz: str | None, expected: datetime) -> None:
    parsed = parse_time(raw, fmt, UTC, "x", zone(tz) if tz else None)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset() or tz == "America/New_York"


def test_an_instant_is_shown_at_the_source_zone_but_keeps_its_instant() -> None:
    shown = parse_time(1433052383, "epoch_s", UTC, "x", LA)
    assert shown.isoformat() == "2015-05-30T23:06:23-07:00"
    assert shown == datetime(2015, 5, 31, 6, 6, 23, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "fmt", "tz"), [
    ("yesterday", "iso8601", None), ("Date(abc)", "dotnet_date", None),
    (1442491463, "local_epoch_s", None), (True, "epoch_s", None),
])
def test_bad_times_name_the_format(raw: Any, fmt: str, tz: str | None) -> None:
    with pytest.raises(DataError) as caught:
        parse_time(raw, fmt, UTC, "r[0].time", zone(tz) if tz else None)
    assert caught.value.location == "r[0].time"


def test_time_zone_expression_must_name_a_zone() -> None:
    m = mapping(rule(each="r", time_zone="item.tz"))
    out = m.extract({"r": [{"t": "2026-01-01T00:00:00", "v": 1, "tz": "Mars/Olympus"}]})
    assert out.errors[0].message == "time zone is neither an IANA name nor a UTC offset"
