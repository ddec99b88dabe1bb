"""File backfill: export files streamed into the inbox through the source's connector.

An import reads a file's items (hub.channels.file_readers), puts them into payloads shaped by the
layout (hub.mappings.layouts), checks each payload with the connector's cheap ``decode`` as
``POST /ingest/{source}`` does, and commits the payloads to the inbox, where the normal worker
pipeline processes them. Every commit also moves the file's checkpoint (hub.store.imports), in
the same transaction:

- **resumable**: an interrupted import started again continues after its last committed chunk;
  an import already done is a no-op. A file is known by its content (SHA-256), not its path.
- **never duplicated**: each payload's dedupe key is the import's key plus the position of its
  first item, so even a ``--restart`` of a finished import stores nothing new.
- **bounded memory**: one chunk of items at a time (``chunk`` items, at most the message size
  limit), whatever the file's size.
- **nothing dropped**: an item that cannot be read, or a payload the connector refuses, is kept
  in the inbox as a failed message with the reason, reported, and the import goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy.engine import Engine

from hub.channels.file_readers import (
    SENTINEL,
    CsvRows,
    FileProblem,
    Item,
    JsonItems,
    NdjsonLines,
    Reader,
    Refused,
    WholeDocument,
    json_envelope,
)
from hub.contracts import Connector
from hub.errors import ConfigurationError, DataError
from hub.mappings.layouts import ITEM, ITEMS, PLACEHOLDER, FileLayout
from hub.store import imports, inbox

CONTENT_TYPE = "application/json"
CLIENT = "hub import"
_DROP = object()  # an optional variable that was not given: its member is left out
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Payload:
    """A payload template split around where the items go (``{items}``: an array of a chunk;
    ``{item}``: one item). ``items_path`` is that place as a dotted path (for error messages)."""

    prefix: bytes
    suffix: bytes
    chunked: bool
    items_path: str

    def body(self, items: list[bytes]) -> bytes:
        inner = b"[" + b",".join(items) + b"]" if self.chunked else items[0]
        return self.prefix + inner + self.suffix


def _split(document: Any, chunked: bool, items_path: str) -> Payload:
    dumped = orjson.dumps(document)
    marker = orjson.dumps(SENTINEL)
    if dumped.count(marker) != 1:
        raise FileProblem("the payload template holds the items placeholder more than once")
    prefix, suffix = dumped.split(marker)
    return Payload(prefix, suffix, chunked, items_path)


def render_template(template: Any, variables: dict[str, str]) -> Payload:
    """The layout's ``payload`` with ``--set`` variables filled in; ConfigurationError naming
    every required variable that was not given."""
    missing: list[str] = []
    spot: list[tuple[str, bool]] = []

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                rendered = walk(value, f"{path}.{key}" if path else key)
                if rendered is not _DROP:
                    out[key] = rendered
            return out if out or not node else _DROP
        if isinstance(node, list):
            return [v for v in (walk(x, path) for x in node) if v is not _DROP]
        match = PLACEHOLDER.match(node) if isinstance(node, str) else None
        if match is None:
            return node
        name, optional = match.group(1), match.group(2) is not None
        if name in (ITEMS, ITEM):
            spot.append((path, name == ITEMS))
            return SENTINEL
        if name in variables:
            return variables[name]
        if not optional:
            missing.append(name)
        return _DROP

    rendered = walk(template, "")
    if missing:
        raise ConfigurationError("the layout needs " + ", ".join(
            f"--set {name}=..." for name in dict.fromkeys(missing)))
    (items_path, chunked), = spot  # the layout model checked there is exactly one
    return _split(rendered, chunked, items_path)


@dataclass(frozen=True, slots=True)
class Committed:
    """One inbox message an import stored (or found stored), and the items it holds."""

    message_id: str
    duplicate: bool
    failed: bool
    labels: tuple[str, ...]  # where each item came from, in payload order
    items_path: str | None  # where the items are in the payload (None: one item, the payload)


@dataclass
class FileReport:
    """What happened to one file."""

    path: str
    items: int = 0  # items sent in payloads, this run
    refused: int = 0  # items or payloads kept as failed messages, this run
    skipped: int = 0  # CSV rows left out by the layout's `where`
    stored: int = 0  # inbox messages written, this run
    resumed_from: str | None = None  # where a resumed import went on ("line 5,001")
    already_done: bool = False
    problem: str | None = None  # the file could not be read (through)

    @property
    def ok(self) -> bool:
        return self.problem is None and self.refused == 0


@dataclass
class Listener:
    """What an import tells its caller as it goes (all optional)."""

    progress: Callable[[str, int, int], None] = lambda path, done, total: None
    refused: Callable[[str, str, str, str], None] = lambda path, label, reason, message: None
    committed: Callable[[str, list[Committed]], None] = lambda path, batch: None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _span(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{labels[0]}-{labels[-1]}"


def _where(label: str) -> str:
    """A label as the stored error names it (the message does not know the file's name)."""
    return f"line {label}" if label[:1].isdigit() else label


@dataclass
class _Pending:
    """What the next commit writes."""

    items: list[Item] = field(default_factory=list)
    size: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    labels: list[tuple[str, ...]] = field(default_factory=list)
    item_count: int = 0
    refused: int = 0
    end: int | None = None
    lines: int = 0


class FileImporter:
    """Imports files into one source with one layout (or none) and one set of variables."""

    def __init__(self, engine: Engine, connector: Connector, *, layout_name: str | None,
                 layout: FileLayout | None, variables: dict[str, str], chunk: int,
                 max_body: int, restart: bool = False, listener: Listener | None = None) -> None:
        self.engine, self.connector = engine, connector
        self.source = connector.name
        self.layout_name, self.layout = layout_name or "", layout
        self.variables, self.chunk, self.max_body = variables, chunk, max_body
        self.restart = restart
        self.listener = listener or Listener()
        self.payload = (render_template(layout.payload, variables)
                        if layout is not None and layout.payload is not None else None)

    def _import_key(self, sha: str) -> str:
        identity = orjson.dumps([sha, self.source, self.layout_name,
                                 sorted(self.variables.items())])
        return hashlib.sha256(identity).hexdigest()

    def run(self, path: Path) -> FileReport:
        """Import one file; problems are in the report (only a database failure raises)."""
        report = FileReport(str(path))
        try:
            size = path.stat().st_size
            sha = file_sha256(path)
        except OSError as exc:
            report.problem = f"cannot read ({exc.strerror})"
            return report
        checkpoint, resumed = imports.open_import(
            self.engine, self._import_key(sha), source=self.source, layout=self.layout_name,
            file_sha256=sha, path=str(path), size=size, restart=self.restart)
        if checkpoint.status == imports.DONE:
            report.already_done = True
            return report
        if resumed and checkpoint.position:
            report.resumed_from = (f"line {checkpoint.line + 1:,}" if checkpoint.line
                                   else f"item {checkpoint.position:,}")
        try:
            with path.open("rb") as fh:
                payload, reader = self._open(fh, path, size, checkpoint)
                self._stream(path, size, reader, payload, checkpoint, report)
        except FileProblem as exc:
            report.problem = str(exc)
        except OSError as exc:
            report.problem = f"cannot read ({exc.strerror})"
        return report

    def _open(self, fh: IO[bytes], path: Path, size: int, checkpoint: imports.Checkpoint
              ) -> tuple[Payload | None, Reader]:
        """The payload shape, and the file's items from the checkpoint on."""
        layout = self.layout
        fmt = layout.format if layout is not None else _format_of(path)
        if fmt == "csv":
            if layout is None:
                raise FileProblem("a CSV file needs a layout (--layout NAME; a device mapping's "
                                  "`files` section names its columns)")
            return self.payload, CsvRows(fh, layout, checkpoint.position, checkpoint.line)
        if fmt == "ndjson":
            return self.payload, NdjsonLines(fh, checkpoint.position, checkpoint.line)
        items = layout.items if layout is not None else None
        if items is None:  # the document is the one item
            if size > self.max_body:
                raise FileProblem(f"{size:,} bytes is over the {self.max_body:,}-byte message "
                                  "limit: use a layout whose `items` names the array to stream")
            return self.payload, WholeDocument(fh.read())
        payload = self.payload
        if payload is None:  # the document's own members around each chunk
            payload = _split(json_envelope(fh, items), True, items)
            fh.seek(0)
        return payload, JsonItems(fh, items, checkpoint.position)

    def _stream(self, path: Path, size: int, reader: Reader, payload: Payload | None,
                checkpoint: imports.Checkpoint, report: FileReport) -> None:
        pending = _Pending()
        chunked = payload is not None and payload.chunked
        room = self.max_body - (len(payload.prefix) + len(payload.suffix) + 2 if payload else 0)
        for read in reader:
            pending.end, pending.lines = read.end, read.lines
            if isinstance(read, Refused):
                self._refuse(pending, read.raw, read.label, read.reason)
            elif len(read.body) > room:
                self._refuse(pending, read.body, read.label,
                             f"too large for one message ({len(read.body):,} bytes)")
            elif payload is not None and chunked:
                if pending.items and pending.size + len(read.body) + 1 > room:
                    self._chunk(pending, payload)  # the message size limit closes a chunk early
                pending.items.append(read)
                pending.size += len(read.body) + 1
            else:
                body = payload.body([read.body]) if payload is not None else read.body
                self._row(pending, body, (read.label,), read.start)
            waiting = len(pending.items) if chunked else len(pending.rows)
            if waiting >= self.chunk or pending.refused >= self.chunk:
                if payload is not None and pending.items:
                    self._chunk(pending, payload)
                self._commit(path, pending, payload, checkpoint, report, done=False)
                self.listener.progress(str(path), reader.consumed, size)
        if payload is not None and pending.items:
            self._chunk(pending, payload)
        if pending.end is None:  # nothing left after the checkpoint
            pending.end, pending.lines = checkpoint.position, checkpoint.line
        self._commit(path, pending, payload, checkpoint, report, done=True)
        self.listener.progress(str(path), size, size)
        report.skipped = reader.skipped

    def _key(self, checkpoint: imports.Checkpoint, kind: str, position: int) -> str:
        return f"import:{checkpoint.import_key[:40]}:{kind}:{position}"

    def _refuse(self, pending: _Pending, raw: bytes, label: str, reason: str) -> None:
        pending.rows.append({"body": raw[:self.max_body], "status": inbox.STATUS_FAILED,
                             "error": f"{_where(label)}: {reason}", "_label": label,
                             "_reason": reason, "_start": ("refused", pending.end)})
        pending.labels.append((label,))
        pending.refused += 1

    def _chunk(self, pending: _Pending, payload: Payload) -> None:
        items = pending.items
        self._row(pending, payload.body([i.body for i in items]),
                  tuple(i.label for i in items), items[0].start)
        pending.items, pending.size = [], 0

    def _row(self, pending: _Pending, body: bytes, labels: tuple[str, ...], start: int) -> None:
        row: dict[str, Any] = {"body": body, "status": inbox.STATUS_RECEIVED, "error": None,
                               "_start": ("items", start)}
        try:
            self.connector.decode(body, CONTENT_TYPE)  # the intake's cheap check
        except DataError as exc:
            where = f" at {exc.location}" if exc.location else ""
            span = _span(list(labels))
            row.update(status=inbox.STATUS_FAILED, error=f"{_where(span)}: "
                       f"{exc.message}{where}", _label=span,
                       _reason=f"{exc.message}{where}")
            pending.refused += 1
        pending.rows.append(row)
        pending.labels.append(labels)
        pending.item_count += len(labels)

    def _commit(self, path: Path, pending: _Pending, payload: Payload | None,
                checkpoint: imports.Checkpoint, report: FileReport, *, done: bool) -> None:
        rows = []
        for row in pending.rows:
            kind, start = row.pop("_start")
            rows.append({"source": self.source, "channel": "file", "content_type": CONTENT_TYPE,
                         "client": CLIENT, "dedupe_key": self._key(checkpoint, kind, start),
                         **{k: v for k, v in row.items() if not k.startswith("_")}})
        assert pending.end is not None
        stored = imports.commit(self.engine, checkpoint, rows, position=pending.end,
                                line=pending.lines, items=pending.item_count,
                                refused=pending.refused, done=done)
        committed: list[Committed] = []
        for row, labels, result in zip(pending.rows, pending.labels, stored, strict=True):
            if "_reason" in row and not result.duplicate:
                self.listener.refused(str(path), row["_label"], row["_reason"], result.message_id)
            committed.append(Committed(
                result.message_id, result.duplicate, row["status"] == inbox.STATUS_FAILED,
                labels, payload.items_path if payload is not None and payload.chunked else None))
            report.stored += not result.duplicate
        report.items += pending.item_count
        report.refused += pending.refused
        self.listener.committed(str(path), committed)
        pending.rows, pending.labels = [], []
        pending.item_count = pending.refused = 0


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson"
    return "csv" if suffix == ".csv" else "json"

