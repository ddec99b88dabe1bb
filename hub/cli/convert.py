"""``hub convert SOURCE FILE...``: what the pipeline would produce, as a Bundle; writes nothing.

Runs the real pipeline stages against a scratch in-memory store (so identity resolution behaves
as in a fresh hub) and prints one ``collection`` Bundle on stdout. Exit 0 when every input
converted; otherwise one line per bad input on stderr and exit 1.
"""

from __future__ import annotations

import mimetypes
import sys
import tempfile
from pathlib import Path

import orjson
import typer

from hub.contracts import RawMessage
from hub.errors import DataError
from hub.fhir.bundle import collection_bundle
from hub.fhir.ids import stable_id
from hub.identity import IdentityResolver
from hub.runtime import Hub
from hub.settings import Settings
from hub.store.db import upgrade, utcnow
from hub.telemetry import Telemetry


def _content_type(path: Path) -> str:
    if path.suffix.lower() in (".hl7", ".er7", ".txt"):
        return "x-application/hl7-v2+er7"
    return mimetypes.guess_type(path.name)[0] or "application/json"


def convert(
    source: str = typer.Argument(..., help="connector name, e.g. hub"),
    files: list[Path] = typer.Argument(..., help="payload files", exists=False),
) -> None:
    """Print the FHIR Bundle the pipeline would produce for these inputs."""
    with tempfile.TemporaryDirectory(prefix="hub-convert-") as scratch:
        _convert(source, files, f"sqlite:///{scratch}/scratch.db")


def _convert(source: str, files: list[Path], scratch_url: str) -> None:
    settings = Settings(database_url=scratch_url, inline_worker=False,
                        sqlite_synchronous="NORMAL")
    upgrade(scratch_url)
    hub = Hub.build(settings, Telemetry.disabled())
    hub.connectors.get(source)  # unknown source: one clear line, exit 2
    produced: list[dict[str, object]] = []
    failures = 0
    resolver = IdentityResolver({})
    with hub.engine.connect() as conn:  # rolled back: the scratch store stays empty
        for path in files:
            try:
                body = path.read_bytes()
            except OSError as exc:
                typer.echo(f"{path}: cannot read ({exc.strerror})", err=True)
                failures += 1
                continue
            raw = RawMessage(stable_id("convert", str(path)), source, _content_type(path), body,
                             utcnow())
            try:
                outcome = hub.pipeline.convert(conn, raw, resolver)
            except DataError as exc:
                where = f" at {exc.location}" if exc.location else ""
                typer.echo(f"{path}: {exc.message}{where}", err=True)
                failures += 1
                continue
            for error in outcome.errors:
                typer.echo(f"{path}: {error}", err=True)
            failures += bool(outcome.errors)
            produced.extend(outcome.resources)
        conn.rollback()
    unique = {(r["resourceType"], r["id"]): r for r in produced}
    bundle = collection_bundle(unique.values(), key="|".join(str(f) for f in files))
    sys.stdout.buffer.write(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")
    if failures:
        raise typer.Exit(1)
