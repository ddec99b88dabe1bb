"""``hub convert SOURCE FILE...``: what the pipeline would produce, as a Bundle; writes nothing.

Runs the real pipeline stages against a scratch in-memory store (so identity resolution behaves
as in a fresh hub) and prints one ``collection`` Bundle on stdout. Exit 0 when every input
converted; otherwise one line per bad input on stderr and exit 1.

``hub convert --mapping FILE PAYLOAD...`` is the mapping debugger: it runs one device-mapping
file (a draft need not be live, nor even valid — its problems are printed with positions) and the
type catalogues over raw JSON payloads, without a connector or a store, and prints the
Observations with every refused item on stderr.
"""

from __future__ import annotations

import mimetypes
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import typer

from hub.cli.mappings import observation_builder
from hub.contracts import RawMessage, mqtt_meta
from hub.errors import DataError, MappingError
from hub.fhir.bundle import collection_bundle
from hub.fhir.ids import stable_id
from hub.identity import IdentityResolver
from hub.mappings import golden
from hub.runtime import Hub
from hub.settings import Settings
from hub.store.db import upgrade, utcnow
from hub.telemetry import Telemetry


def _content_type(path: Path) -> str:
    if path.suffix.lower() in (".hl7", ".er7", ".txt"):
        return "x-application/hl7-v2+er7"
    return mimetypes.guess_type(path.name)[0] or "application/json"


def convert(
    args: list[str] = typer.Argument(..., metavar="SOURCE FILE... | PAYLOAD...",
                                     help="connector name then payload files; with --mapping, "
                                          "payload files only"),
    mapping: Path | None = typer.Option(None, "--mapping", help="run this device-mapping file "
                                                                "alone (the mapping debugger)"),
    account: str | None = typer.Option(None, "--account", help="with --mapping: wrap each "
                                       "payload in the account envelope {account, response}, as "
                                       "pollers post vendor-cloud responses"),
    topic: str | None = typer.Option(None, "--topic", help="as if the payloads arrived on this "
                                     "MQTT topic (mappings read meta.topic, meta.topic_levels)"),
) -> None:
    """Print the FHIR Bundle the pipeline (or one mapping, with --mapping) produces."""
    meta = mqtt_meta(topic) if topic is not None else None
    if mapping is not None:
        _debug_mapping(mapping, [Path(a) for a in args], account, meta)
        return
    if len(args) < 2:
        typer.echo("hub: give a source and at least one payload file "
                   "(or --mapping FILE PAYLOAD...)", err=True)
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="hub-convert-") as scratch:
        _convert(args[0], [Path(a) for a in args[1:]], f"sqlite:///{scratch}/scratch.db", meta)


def _debug_mapping(mapping_file: Path, files: list[Path], account: str | None,
                   meta: dict[str, Any] | None) -> None:
    settings = Settings()
    root = golden.mappings_root(mapping_file.resolve())
    if not (root / "types").is_dir():
        root = settings.mappings_dir
    try:
        mapping_set = golden.single_mapping_set(mapping_file, root)
    except MappingError as exc:
        for problem in [*map(str, exc.problems)] or [exc.message]:
            typer.echo(str(problem), err=True)  # file:line:column: field: problem
        raise typer.Exit(1) from None
    (name,) = mapping_set.devices
    to_fhir = observation_builder(name)
    produced: list[dict[str, object]] = []
    failures = 0
    for path in files:
        try:
            payload = orjson.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
        except (OSError, orjson.JSONDecodeError) as exc:
            typer.echo(f"{path}: not a readable JSON payload ({type(exc).__name__})", err=True)
            failures += 1
            continue
        if account is not None:
            payload = {"account": account, "response": payload}
        resources, errors = golden.convert(payload, name, mapping_set, to_fhir, meta)
        for error in errors:
            typer.echo(f"{path}: {error}", err=True)
        failures += bool(errors)
        produced.extend(resources)
    bundle = collection_bundle(produced, key="|".join(str(f) for f in files))
    sys.stdout.buffer.write(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")
    if failures:
        raise typer.Exit(1)


def _convert(source: str, files: list[Path], scratch_url: str,
             meta: dict[str, Any] | None) -> None:
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
                             utcnow(), meta=meta)
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
