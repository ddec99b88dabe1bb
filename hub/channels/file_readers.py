"""Streaming readers of export files: the items of a JSON array, NDJSON lines, CSV rows.

Each reader yields the file's items one at a time (as JSON bytes), never the whole file, so an
import of any size runs in memory bounded by one chunk. Every item says where it starts and ends
(``start``/``end``: a byte offset for NDJSON and CSV, an item index for JSON, whose parser does
not expose offsets) so an import can checkpoint and resume after the last committed item, and
which line it is on (``label``) for error messages. An item that cannot be read (a line that is
not JSON, a CSV cell that is not a number) is yielded as ``Refused`` with its raw bytes and the
reason; the reader goes on. A file that cannot be read at all raises ``FileProblem``.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from math import isfinite
from typing import IO, Any, Protocol

import ijson
import orjson

from hub.mappings.layouts import CsvColumn, FileLayout

BOM = codecs.BOM_UTF8
SENTINEL = "\x00hub-import-items\x00"  # where the items go in a JSON envelope (never in data)


class FileProblem(Exception):
    """The file as a whole cannot be read (the reason names no content)."""


@dataclass(slots=True)
class Item:
    """One item as JSON bytes, with its position (see module docstring)."""

    body: bytes
    start: int
    end: int
    label: str  # the line ("12") or the array element ("records[3]")
    lines: int = 0  # lines read through the end of this item (NDJSON, CSV)


@dataclass(slots=True)
class Refused:
    """An item that could not be read, kept raw with the reason."""

    raw: bytes
    start: int
    end: int
    label: str
    reason: str
    lines: int = 0


Read = Item | Refused


class Reader(Protocol):
    """A file's items in order; ``consumed`` is how many bytes were read so far (progress) and
    ``skipped`` how many rows a CSV layout's ``where`` left out."""

    @property
    def consumed(self) -> int: ...

    @property
    def skipped(self) -> int: ...

    def __iter__(self) -> Iterator[Read]: ...


class CountingReader:
    """A binary file whose reads are counted (how far a streaming parser got, for progress)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.consumed += len(data)
        return data


def _json_reason(exc: Exception) -> str:
    # yajl's message quotes the text around the error on its next lines: keep the first only.
    return str(exc).splitlines()[0].strip() if str(exc) else type(exc).__name__


# -- JSON ----------------------------------------------------------------------------------------

def json_prefix(items: str) -> str:
    """ijson's prefix for the elements of the array at dotted path ``items``."""
    return f"{items}.item" if items else "item"


def json_envelope(fh: IO[bytes], items: str) -> Any:
    """The document without the array at ``items``, with ``SENTINEL`` in its place (one
    streaming pass; the array's elements are skipped, never built)."""
    builder = ijson.ObjectBuilder()
    inside = False
    found = False
    try:
        for prefix, event, value in ijson.parse(fh, use_float=True):
            if inside:
                if prefix == items and event == "end_array":
                    inside = False
                continue
            if prefix == items and event == "start_array" and not found:
                builder.event("string", SENTINEL)
                inside = found = True
                continue
            builder.event(event, value)
    except ijson.JSONError as exc:
        raise FileProblem(f"not valid JSON ({_json_reason(exc)})") from None
    if not found:
        raise FileProblem(f"no array at '{items or '$'}' (the layout's `items`)")
    return builder.value


class JsonItems:
    """The elements of the array at ``items``, from element ``start`` on."""

    skipped = 0

    def __init__(self, fh: IO[bytes], items: str, start: int) -> None:
        self.source = CountingReader(fh)
        self.items = items
        self.start = start

    @property
    def consumed(self) -> int:
        return self.source.consumed

    def __iter__(self) -> Iterator[Read]:
        index = -1
        try:
            for index, element in enumerate(ijson.items(self.source, json_prefix(self.items),
                                                        use_float=True)):
                if index < self.start:
                    continue  # resuming: these were committed by the interrupted run
                yield Item(orjson.dumps(element), index, index + 1,
                           f"{self.items or ''}[{index}]")
        except ijson.JSONError as exc:
            raise FileProblem(f"not valid JSON after item {index + 1} "
                              f"({_json_reason(exc)})") from None


class WholeDocument:
    """A JSON file that is one item (the document)."""

    skipped = 0

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.consumed = len(body)

    def __iter__(self) -> Iterator[Read]:
        text = self.body.removeprefix(BOM)
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Refused(self.body, 0, 1, "$", f"not JSON ({exc.msg} at character {exc.pos})")
            return
        yield Item(text, 0, 1, "$")


# -- NDJSON --------------------------------------------------------------------------------------

class NdjsonLines:
    """Each non-blank line from byte offset ``start`` (line number ``line`` + 1) on."""

    skipped = 0

    def __init__(self, fh: IO[bytes], start: int, line: int) -> None:
        self.fh, self.start, self.line = fh, start, line
        self.consumed = start

    def __iter__(self) -> Iterator[Read]:
        self.fh.seek(self.start)
        offset, number = self.start, self.line
        for raw in self.fh:
            begin, offset, number = offset, offset + len(raw), number + 1
            self.consumed = offset
            text = raw.strip()
            if begin == 0:
                text = text.removeprefix(BOM)
            if not text:
                continue
            try:
                orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                yield Refused(raw, begin, offset, str(number),
                              f"not JSON ({exc.msg} at character {exc.pos})", number)
                continue
            yield Item(text, begin, offset, str(number), number)


# -- CSV -----------------------------------------------------------------------------------------

_INTEGER = re.compile(r"^[+-]?\d+$")


def _typed(cell: str, spec: CsvColumn) -> Any:
    if spec.type == "string":
        return cell
    text = cell.strip()
    if _INTEGER.match(text):
        return int(text)
    if spec.type == "number":
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if isfinite(number):
            return number
    kind = "a number" if spec.type == "number" else "an integer"
    raise ValueError(f"column '{spec.column}' is not {kind}")


def _columns(layout: FileLayout) -> dict[str, CsvColumn]:
    return {name: CsvColumn(column=spec) if isinstance(spec, str) else spec
            for name, spec in (layout.columns or {}).items()}


class CsvRows:
    """Each data row from byte offset ``start`` on, as an item object built by the layout's
    ``columns``; rows failing ``where`` are counted in ``skipped``."""

    def __init__(self, fh: IO[bytes], layout: FileLayout, start: int, line: int) -> None:
        self.fh, self.layout = fh, layout
        self.columns = _columns(layout)
        self.skipped = 0
        self.consumed = start
        self._lines: list[bytes] = []  # raw lines of the row being read
        self.header, header_end = self._header()
        self.start, self.line = max(start, header_end), max(line, 1)
        self.index = self._index()

    def _physical(self, start: int) -> Iterator[str]:
        """Decoded lines from ``start``; their raw bytes gather in ``_lines``, the offset in
        ``consumed``. Undecodable bytes are kept (surrogateescape) and refuse their row."""
        self.fh.seek(start)
        self.consumed = start
        for raw in self.fh:
            if self.consumed == 0 and raw.startswith(BOM):
                raw = raw[len(BOM):]
                self.consumed += len(BOM)
            self._lines.append(raw)
            self.consumed += len(raw)
            yield raw.decode("utf-8", errors="surrogateescape")

    def _header(self) -> tuple[list[str], int]:
        reader = csv.reader(self._physical(0), delimiter=self.layout.delimiter)
        header = next(reader, None)
        if not header:
            raise FileProblem("empty CSV file: no header row")
        self._lines.clear()
        return [h.strip() for h in header], self.consumed

    def _index(self) -> dict[str, int]:
        index = {name: i for i, name in enumerate(self.header)}
        wanted = [c.column for c in self.columns.values() if c.column is not None]
        wanted += [f.column for f in self.layout.where]
        missing = sorted({name for name in wanted if name not in index})
        if missing:
            raise FileProblem("the header lacks the layout's column(s) "
                              + ", ".join(f"'{m}'" for m in missing))
        return index

    def __iter__(self) -> Iterator[Read]:
        reader = csv.reader(self._physical(self.start), delimiter=self.layout.delimiter)
        begin, number = self.start, self.line
        width = len(self.header)
        while True:
            error: str | None = None
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row, error = [], f"not CSV ({exc})"
            raw = b"".join(self._lines)
            self._lines.clear()
            label = str(number + 1)
            first, begin, number = begin, self.consumed, self.line + reader.line_num
            if error is None and not row:
                continue  # a blank line
            if error is None:
                error = self._check(row, width)
            if error is not None:
                yield Refused(raw, first, begin, label, error, number)
                continue
            if not all(f.accepts(row[self.index[f.column]]) for f in self.layout.where):
                self.skipped += 1
                continue
            try:
                body = orjson.dumps(self._item(row))
            except ValueError as exc:
                yield Refused(raw, first, begin, label, str(exc), number)
                continue
            yield Item(body, first, begin, label, number)

    def _check(self, row: list[str], width: int) -> str | None:
        if len(row) > width:
            return f"{len(row)} fields, the header has {width}"
        row.extend([""] * (width - len(row)))
        if any("\udc80" <= ch <= "\udcff" for cell in row for ch in cell):
            return "not UTF-8 text"
        return None

    def _item(self, row: list[str]) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for field, spec in self.columns.items():
            if spec.column is None:
                value: Any = spec.const
            else:
                cell = row[self.index[spec.column]]
                if cell == "":
                    continue  # an empty cell is no value
                value = _typed(cell, spec)
            node = item
            *parents, leaf = field.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return item
