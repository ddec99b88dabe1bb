"""Two optional sections of a device mapping: ``sampled`` (high-rate types grouped per period)
and ``files`` (how exports of the mapping's source are read by ``hub import``).

Both are declared here as pydantic models and added to ``DeviceMapping`` (hub.mappings.schema),
so their JSON Schema, file:line:column errors and hot reload come with the mapping file.

A *file layout* turns an export into payloads for the source's connector, which then take the
same durable intake as ``POST /ingest/{source}``:

- ``format``: ``json`` (one document), ``ndjson`` (one JSON value a line) or ``csv``.
- the file's *items*: the elements of the array at ``items`` (json), each line (ndjson), each
  row (csv, turned into an object by ``columns``); a json layout without ``items`` has one item,
  the document.
- ``payload``: the JSON the connector receives, a template. The string ``"{items}"`` stands for
  a chunk of items (an array), ``"{item}"`` for one item (one payload per item); any other
  ``"{name}"`` is a variable given on the command line (``--set name=value``), ``"{name?}"`` an
  optional one (the member is left out when not given). Without ``payload``, a json layout with
  ``items`` keeps the document's other members around each chunk, and other layouts send each
  item as it is.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ITEMS = "items"
ITEM = "item"
#: ``{name}`` or ``{name?}``: a whole-string placeholder in a payload template.
PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_-]*)(\?)?\}$")
MAX_SLOTS = 10_000  # data points in one SampledData: a day of 10-second readings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampledGrouping(_Strict):
    """Readings of one type grouped into one Observation per period, as FHIR R4 SampledData.

    Period starts are aligned to UTC (an ``PT1H`` Observation covers 10:00-10:59:59.999Z); slot
    *i* of the data holds the reading taken in ``[start + i*every, start + (i+1)*every)``, ``E``
    marks a slot with none. A later reading for a stored period is merged into it.
    """

    every: timedelta = Field(description="the sampling interval, one data slot (ISO 8601 "
                                         "duration, e.g. PT5M for a CGM)")
    per: timedelta = Field(description="the period one Observation covers, a whole multiple "
                                       "of `every` (ISO 8601 duration, e.g. PT1H or P1D)")

    @model_validator(mode="after")
    def _whole_slots(self) -> SampledGrouping:
        ms = timedelta(milliseconds=1)
        if self.every <= timedelta(0) or self.every % ms:
            raise ValueError("`every` must be a positive whole number of milliseconds")
        if self.per % self.every or self.per < self.every:
            raise ValueError("`per` must be a whole multiple of `every`")
        if self.per // self.every > MAX_SLOTS:
            raise ValueError(f"`per` / `every` gives more than {MAX_SLOTS} data points")
        return self

    @property
    def every_ms(self) -> int:
        return self.every // timedelta(milliseconds=1)

    @property
    def per_ms(self) -> int:
        return self.per // timedelta(milliseconds=1)


class CsvColumn(_Strict):
    """Where one field of an item comes from: a column of the row, or a constant."""

    column: str | None = Field(None, description="the header of the column")
    const: str | int | float | bool | None = Field(None, description="a fixed value instead")
    type: Literal["string", "number", "integer"] = Field(
        "string", description="how the cell is read; a cell that is not one refuses the row")

    @model_validator(mode="after")
    def _one_source(self) -> CsvColumn:
        if (self.column is None) == (self.const is None):
            raise ValueError("give exactly one of `column` and `const`")
        return self


class RowFilter(_Strict):
    """Rows to take: the others (an export's preamble, events that are not readings) are
    counted and skipped on purpose."""

    column: str = Field(description="the header of the column tested")
    equals: str | None = Field(None, description="take rows whose cell is this text")
    one_of: list[str] | None = Field(None, min_length=1,
                                     description="take rows whose cell is one of these texts")

    @model_validator(mode="after")
    def _one_test(self) -> RowFilter:
        if (self.equals is None) == (self.one_of is None):
            raise ValueError("give exactly one of `equals` and `one_of`")
        return self

    def accepts(self, cell: str | None) -> bool:
        return cell == self.equals if self.equals is not None else cell in (self.one_of or ())


def placeholders(template: Any) -> list[tuple[str, bool]]:
    """Every ``{name}``/``{name?}`` in a payload template, in document order (name, optional)."""
    found: list[tuple[str, bool]] = []
    if isinstance(template, dict):
        for value in template.values():
            found.extend(placeholders(value))
    elif isinstance(template, list):
        for value in template:
            found.extend(placeholders(value))
    elif isinstance(template, str):
        match = PLACEHOLDER.match(template)
        if match:
            found.append((match.group(1), match.group(2) is not None))
    return found


class FileLayout(_Strict):
    """How one kind of export file becomes payloads of this mapping's source (``hub import``)."""

    description: str = ""
    format: Literal["json", "ndjson", "csv"]
    items: str | None = Field(
        None, description="json: the dotted path of the array whose elements are streamed in "
                          "chunks (records, data.points); an empty string: the document is "
                          "the array. Omit: the document is one item")
    payload: dict[str, Any] | None = Field(
        None, description='the payload template: "{items}" a chunk of items, "{item}" one item, '
                          '"{name}" / "{name?}" a required / optional --set variable')
    columns: dict[str, str | CsvColumn] | None = Field(
        None, description="csv: item field (a dotted path makes nested objects) → column "
                          "header, or {column, type} / {const}")
    where: list[RowFilter] = Field(default_factory=list,
                                   description="csv: only rows passing every test are items")
    delimiter: str = Field(",", min_length=1, max_length=1, description="csv: field separator")

    @model_validator(mode="after")
    def _consistent(self) -> FileLayout:
        if self.format != "json" and self.items is not None:
            raise ValueError("`items` is for json files (ndjson lines and csv rows are items)")
        if self.format == "csv":
            if not self.columns:
                raise ValueError("a csv layout needs `columns` (which column feeds which field)")
            if self.payload is None:
                raise ValueError("a csv layout needs `payload` (where the rows go)")
        elif self.columns is not None or self.where:
            raise ValueError("`columns` and `where` are for csv files")
        if self.payload is not None:
            spots = [name for name, _ in placeholders(self.payload) if name in (ITEMS, ITEM)]
            if len(spots) != 1:
                raise ValueError('`payload` must hold "{items}" or "{item}" exactly once')
            if self.format == "json" and self.items is None and spots[0] == ITEMS:
                raise ValueError('without `items` the document is one item: use "{item}"')
        return self

    @property
    def chunked(self) -> bool:
        """True when items are sent in chunks (``{items}``, or a json envelope around them)."""
        if self.payload is None:
            return self.format == "json" and self.items is not None
        return any(name == ITEMS for name, _ in placeholders(self.payload))
