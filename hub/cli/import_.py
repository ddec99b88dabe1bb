"""``hub import SOURCE PATH...``: backfill export files through the source's connector.

Streams each file (JSON, NDJSON, CSV) in chunks into the inbox, the same durable intake as
``POST /ingest/{source}`` (hub.channels.file_import): resumable, never duplicated, in bounded
memory, with a progress bar on a terminal. Items that cannot be read are kept as failed messages
and reported one line each as ``FILE:LINE: reason``; the import goes on. ``--process`` also runs
the pipeline on each chunk here and reports the readings the mapping refused, by line.

Exit status: 0 when every item went in; 1 when anything was refused or a file could not be read
(or, with ``--process``, a message ended failed, partial or quarantined); 2 for a usage error.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hub.channels.file_import import CONTENT_TYPE, Committed, FileImporter, FileReport, Listener
from hub.errors import ConfigurationError, HubError
from hub.mappings.layouts import FileLayout
from hub.runtime import Hub
from hub.settings import Settings
from hub.store import inbox

_BAD = (inbox.STATUS_FAILED, inbox.STATUS_PARTIAL, inbox.STATUS_QUARANTINED)


def _line(say: Console, text: str) -> None:
    """One line on stderr, as written (no wrapping or markup: it holds file names and ids)."""
    say.print(text, markup=False, highlight=False, soft_wrap=True)


def _variables(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"--set takes NAME=VALUE, not '{pair}'")
        found[name] = value
    return found


def _layout(hub: Hub, mapping: str, name: str | None) -> FileLayout | None:
    if name is None:
        return None
    compiled = hub.mappings().devices.get(mapping)
    layouts = compiled.mapping.files if compiled is not None else {}
    if name not in layouts:
        known = ", ".join(sorted(layouts)) or "none"
        raise ConfigurationError(f"no layout '{name}' in the '{mapping}' mapping's `files` "
                                 f"(it has: {known})")
    return layouts[name]


class _Processor:
    """``--process``: runs the pipeline on each committed chunk and reports what it refused,
    with the mapping's item positions (``records[3]``) turned into file lines."""

    def __init__(self, hub: Hub, say: Console) -> None:
        self.hub, self.say = hub, say
        self.bad = 0

    def __call__(self, path: str, batch: list[Committed]) -> None:
        todo = {c.message_id: c for c in batch if not c.failed}
        waiting = list(todo)
        while waiting:
            if self.hub.pipeline.run_batch(self.hub.engine, len(waiting), only=waiting) == 0:
                time.sleep(0.05)  # another worker holds them: wait for its outcome
            waiting = [m for m in waiting
                       if (inbox.get(self.hub.engine, m) or {}).get("status")
                       == inbox.STATUS_RECEIVED]
        for message_id, committed in todo.items():
            found = inbox.get(self.hub.engine, message_id) or {}
            if found.get("status") in _BAD:
                self.bad += 1
                for problem in _located(str(found.get("error") or ""), committed):
                    _line(self.say, f"{path}:{problem} ({found['status']}, message {message_id})")


def _located(error: str, committed: Committed) -> list[str]:
    """The pipeline's "; "-joined reasons, each starting with the item's line when known."""
    labels = committed.labels
    if committed.items_path is None:
        return [f"{labels[0]}: {part}" for part in error.split("; ")]
    pattern = re.compile(re.escape(committed.items_path) + r"\[(\d+)\]")
    out = []
    for part in error.split("; "):
        match = pattern.match(part)
        if match and int(match.group(1)) < len(labels):
            rest = part[match.end():].lstrip(".")
            label = labels[int(match.group(1))]
            out.append(label + rest if rest.startswith(":") else f"{label}: {rest}")
        else:
            out.append(f"{labels[0]}-{labels[-1]}: {part}")
    return out


def _summary(report: FileReport) -> str:
    if report.already_done:
        return f"{report.path}: already imported (nothing to do; --restart reads it again)"
    text = f"{report.path}: {report.items:,} items in {report.stored:,} messages"
    if report.refused:
        text += f", {report.refused:,} refused"
    if report.skipped:
        text += f", {report.skipped:,} rows skipped by the layout's `where`"
    if report.resumed_from:
        text += f" (resumed at {report.resumed_from})"
    if report.problem:
        text += f"; stopped: {report.problem}"
    return text


def import_files(
    source: str = typer.Argument(..., help="the source (connector) the files are for: "
                                           "dexcom, hub, withings, ..."),
    paths: list[Path] = typer.Argument(..., help="export files: .json, .ndjson/.jsonl, .csv"),
    layout: str | None = typer.Option(
        None, "--layout", "-l", help="a layout from the source's mapping (`files:`); without "
                                     "one, each JSON file or NDJSON line is one payload"),
    sets: list[str] = typer.Option([], "--set", help="NAME=VALUE for the layout's {NAME} "
                                                     "placeholders (repeatable)"),
    chunk: int = typer.Option(500, "--chunk", min=1, max=100_000,
                              help="items per message (also capped by HUB_MAX_BODY_BYTES)"),
    process: bool = typer.Option(False, "--process", help="also process each chunk here and "
                                 "report refused readings by line (else the workers do)"),
    restart: bool = typer.Option(False, "--restart", help="read files from the start again "
                                 "(chunks already stored are still not stored twice)"),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="progress bar (shown on a terminal only)"),
) -> None:
    """Stream export files into the inbox; resumable (run it again after an interruption)."""
    settings = Settings()
    hub = Hub.build(settings)
    try:
        connector = hub.connectors.get(source)
        if CONTENT_TYPE not in connector.content_types:
            raise HubError(f"source '{source}' does not take JSON; hub import reads JSON, NDJSON "
                           "and CSV exports of JSON sources")
        say = Console(stderr=True)
        processor = _Processor(hub, say) if process else None
        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn(), console=say,
                       disable=not (progress and say.is_terminal))
        tasks: dict[str, object] = {}

        def advance(path: str, done: int, total: int) -> None:
            bar.update(tasks[path], completed=done, total=total)  # type: ignore[arg-type]

        def refused(path: str, label: str, reason: str, message_id: str) -> None:
            _line(say, f"{path}:{label}: {reason} (kept as message {message_id})")

        importer = FileImporter(
            hub.engine, connector, layout_name=layout,
            layout=_layout(hub, connector.mapping_name, layout), variables=_variables(sets),
            chunk=chunk, max_body=settings.max_body_bytes, restart=restart,
            listener=Listener(advance, refused, processor or Listener().committed))
        failed = False
        with bar:
            for path in paths:
                tasks[str(path)] = bar.add_task(path.name, total=None)
                report = importer.run(path)
                if report.problem:
                    _line(say, f"{path}: {report.problem}")
                typer.echo(_summary(report))
                failed = failed or not report.ok
        if processor is not None and processor.bad:
            failed = True
    finally:
        hub.engine.dispose()
    if failed:
        raise typer.Exit(1)
