"""The streaming readers and payload templates of ``hub import`` (no database)."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from hub.channels.file_import import render_template
from hub.channels.file_readers import (
    BOM,
    CsvRows,
    FileProblem,
    Item,
    JsonItems,
    NdjsonLines,
    Refused,
    json_envelope,
)
from hub.errors import ConfigurationError, MappingError
from hub.mappings.catalogue import load_mapping_set
from hub.mappings.layouts import FileLayout
from tests.conftest import REPO

CSV_LAYOUT = FileLayout.model_validate({
    "format": "csv", "payload": {"readings": "{items}"},
    "where": [{"column": "kind", "one_of": ["EGV", "BG"]}],
    "columns": {"time": "when", "value": {"column": "mg/dL", "type": "number"},
                "meta.note": "note", "unit": {"const": "mg/dL"}},
})


def items(reader: object) -> list[Item | Refused]:
    return list(reader)  # type: ignore[call-overload]


def test_csv_rows_become_typed_items_with_their_lines() -> None:
    text = ('\ufeffwhen,kind,mg/dL,note\r\n'
            ',FirstName,,\r\n'                        # a preamble row: skipped by `where`
            '2026-01-01T00:00:00,EGV,101,"two\r\nlines"\r\n'
            '2026-01-01T00:05:00,EGV,Low,\r\n'          # not a number: refused, kept raw
            '2026-01-01T00:10:00,BG,99.5,\r\n'
            '2026-01-01T00:15:00,EGV,1,2,3,4\r\n'       # too many fields
            '\r\n'
            '2026-01-01T00:20:00,EGV,103\r\n')          # short row: the missing cells are empty
    rows = CsvRows(io.BytesIO(text.encode()), CSV_LAYOUT, 0, 0)
    got = items(rows)
    assert [(type(r).__name__, r.label) for r in got] == [
        ("Item", "3"), ("Refused", "5"), ("Item", "6"), ("Refused", "7"), ("Item", "9")]
    assert orjson.loads(got[0].body) == {"time": "2026-01-01T00:00:00", "value": 101,
                                         "meta": {"note": "two\r\nlines"}, "unit": "mg/dL"}
    assert orjson.loads(got[2].body)["value"] == 99.5
    assert isinstance(got[1], Refused) and got[1].reason == "column 'mg/dL' is not a number"
    assert got[1].raw == b"2026-01-01T00:05:00,EGV,Low,\r\n"
    assert isinstance(got[3], Refused) and "6 fields, the header has 4" in got[3].reason
    assert rows.skipped == 1
    # resuming from an item's end yields exactly what followed it, with the same lines
    again = CsvRows(io.BytesIO(text.encode()), CSV_LAYOUT, got[1].end, got[1].lines)
    assert [(r.label, r.start) for r in items(again)] == [(r.label, r.start) for r in got[2:]]


def test_csv_without_the_layouts_columns_is_a_file_problem() -> None:
    with pytest.raises(FileProblem, match="'mg/dL', 'note'"):
        CsvRows(io.BytesIO(b"when,kind\n1,EGV\n"), CSV_LAYOUT, 0, 0)
    with pytest.raises(FileProblem, match="no header"):
        CsvRows(io.BytesIO(b""), CSV_LAYOUT, 0, 0)


def test_csv_bytes_that_are_not_utf8_refuse_their_row_only() -> None:
    text = b"when,kind,mg/dL,note\n2026,EGV,1,caf\xe9\n2026,EGV,2,ok\n"
    got = items(CsvRows(io.BytesIO(text), CSV_LAYOUT, 0, 0))
    assert [type(r).__name__ for r in got] == ["Refused", "Item"]
    assert isinstance(got[0], Refused) and got[0].reason == "not UTF-8 text"


def test_ndjson_lines_refuse_what_is_not_json_and_resume_by_offset() -> None:
    data = BOM + b'{"a": 1}\n\nnot json\n{"a": 2}\r\n'
    got = items(NdjsonLines(io.BytesIO(data), 0, 0))
    assert [(type(r).__name__, r.label) for r in got] == [("Item", "1"), ("Refused", "3"),
                                                         ("Item", "4")]
    assert got[0].body == b'{"a": 1}' and got[2].body == b'{"a": 2}'
    rest = items(NdjsonLines(io.BytesIO(data), got[1].end, got[1].lines))
    assert [(r.label, r.body) for r in rest if isinstance(r, Item)] == [("4", b'{"a": 2}')]


def test_json_items_stream_from_a_nested_array_and_the_envelope_keeps_the_rest() -> None:
    doc = {"meta": {"user": "u1", "data": {"records": [{"v": i} for i in range(5)]}},
           "after": 1.5}
    raw = orjson.dumps(doc)
    envelope = json_envelope(io.BytesIO(raw), "meta.data.records")
    assert envelope == {"meta": {"user": "u1", "data": {"records": "\x00hub-import-items\x00"}},
                        "after": 1.5}
    got = items(JsonItems(io.BytesIO(raw), "meta.data.records", 3))  # resume at element 3
    assert [(r.label, orjson.loads(r.body)) for r in got if isinstance(r, Item)] == [
        ("meta.data.records[3]", {"v": 3}), ("meta.data.records[4]", {"v": 4})]
    with pytest.raises(FileProblem, match=r"no array at 'meta\.records'"):
        json_envelope(io.BytesIO(raw), "meta.records")


def test_broken_json_is_a_file_problem_without_its_content() -> None:
    raw = b'{"records": [{"v": 1}, {"v": SECRET}]}'
    with pytest.raises(FileProblem) as caught:
        items(JsonItems(io.BytesIO(raw), "records", 0))
    assert "after item 1" in str(caught.value) and "SECRET" not in str(caught.value)


def test_payload_templates_fill_variables_and_drop_optional_ones() -> None:
    template = {"account": "{account}", "patient": {"id": "{patient?}"}, "response": "{items}"}
    payload = render_template(template, {"account": "a-1"})
    assert payload.body([b"1", b"2"]) == b'{"account":"a-1","response":[1,2]}'
    assert payload.items_path == "response" and payload.chunked
    with_patient = render_template(template, {"account": "a-1", "patient": "p"})
    assert orjson.loads(with_patient.body([b"{}"]))["patient"] == {"id": "p"}
    with pytest.raises(ConfigurationError, match="--set account"):
        render_template(template, {})
    one = render_template({"account": "{account}", "response": "{item}"}, {"account": "x"})
    assert one.body([b'{"k":1}']) == b'{"account":"x","response":{"k":1}}' and not one.chunked


@pytest.mark.parametrize(("layout", "problem"), [
    ("{format: csv, payload: {r: '{items}'}}", "needs `columns`"),
    ("{format: csv, columns: {a: b}}", "needs `payload`"),
    ("{format: ndjson, items: records}", "`items` is for json"),
    ("{format: json, payload: {r: '{items}'}}", 'use "{item}"'),
    ("{format: json, items: r, payload: {a: '{items}', b: '{item}'}}", "exactly once"),
    ("{format: csv, payload: {r: '{items}'}, columns: {a: {column: x, const: 1}}}",
     "exactly one of"),
])
def test_bad_layouts_are_refused_with_their_position(tmp_path: Path, layout: str,
                                                      problem: str) -> None:
    root = tmp_path / "mappings"
    (root / "devices").mkdir(parents=True)
    (root / "types").symlink_to(REPO / "mappings" / "types")
    (root / "devices" / "x.yaml").write_text(
        "version: 1\nname: x\nmeasurements:\n  - {type: \"'heart-rate'\", time: t, "
        "device: {system: \"'s'\", value: d}, values: {value: v}}\n"
        f"files:\n  broken: {layout}\n")
    with pytest.raises(MappingError) as caught:
        load_mapping_set(root)
    found = [str(p) for p in caught.value.problems]
    assert any("x.yaml:6" in p and "files.broken" in p and problem in p for p in found), found
