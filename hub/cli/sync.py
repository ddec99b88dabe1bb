"""Sync commands: ``hub sync``, ``hub destinations``, ``hub dlq``, ``hub replay``, ``hub keys jwk``.

Exit codes: 0 done; 1 the thing asked about failed (a destination check, an unknown dead
letter); 2 configuration errors (via ``hub.cli.main``).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

import typer
from sqlalchemy.engine import Engine

from hub.errors import ConfigurationError, HubError
from hub.settings import Settings
from hub.store import delivery
from hub.store.db import make_engine
from hub.sync import keys as signing_keys
from hub.sync.config import DestinationsFile, load_destinations, resolve_destinations_file
from hub.sync.routing import OutboxRouter
from hub.sync.senders import build_sender
from hub.sync.settings import SyncSettings
from hub.sync.worker import SyncWorker
from hub.telemetry import Telemetry

log = logging.getLogger("hub.sync")

destinations_app = typer.Typer(no_args_is_help=True, help="sync destinations")
dlq_app = typer.Typer(no_args_is_help=True, help="dead letters: list, show, replay")


def _destinations() -> DestinationsFile:
    path = resolve_destinations_file(SyncSettings().destinations_file)
    if path is None:
        raise ConfigurationError("no destinations file (set HUB_DESTINATIONS_FILE or create "
                                 "./destinations.yaml; see mappings/destinations.example.yaml)")
    return load_destinations(path)


def _engine() -> Engine:
    settings = Settings()
    return make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)


@destinations_app.command("list")
def destinations_list() -> None:
    """Configured destinations, their type and what they take."""
    for d in _destinations().destinations:
        route = d.route
        takes = ",".join(route.resource_types) or "all types"
        if route.categories:
            takes += f" category={','.join(route.categories)}"
        if route.programs:
            takes += f" program={','.join(route.programs)}"
        state = "" if d.enabled else " (disabled)"
        typer.echo(f"{d.name}\t{d.type}\t{takes}{state}")


@destinations_app.command("check")
def destinations_check(name: str = typer.Argument(..., help="destination name")) -> None:
    """Validate the file and make one cheap real call (GET metadata, MLLP connect)."""
    sender = build_sender(_destinations(), name)
    try:
        typer.echo(sender.check())
    except (HubError, OSError) as exc:
        reason = exc.message if isinstance(exc, HubError) else type(exc).__name__
        typer.echo(f"{name}: FAILED: {reason}", err=True)
        raise typer.Exit(1) from None
    finally:
        sender.close()


def sync(
    destination: list[str] = typer.Option(None, "--destination", "-d",
                                          help="only these destinations (repeatable)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be sent (after "
                                 "the EHR profile) for the next --limit rows; send nothing"),
    limit: int = typer.Option(20, help="rows shown by --dry-run"),
    once: bool = typer.Option(False, help="deliver what is due now, then exit"),
) -> None:
    """Drain the outbox to the destinations until interrupted (any number of processes)."""
    config = _destinations()
    names = destination or [d.name for d in config.enabled]
    for name in names:
        config.get(name)  # unknown names fail before anything starts
    sync_settings = SyncSettings()
    engine = _engine()
    worker = SyncWorker(engine, config, lease_secs=sync_settings.sync_lease_secs,
                        poll_secs=sync_settings.sync_poll_secs, telemetry=Telemetry.from_env())
    try:
        if dry_run:
            for name in names:
                typer.echo(json.dumps(worker.preview(name, limit), indent=2))
            return
        if once:
            for name in names:
                typer.echo(f"{name}: {worker.drain(name)} rows attempted")
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        worker.run(stop, names)
    finally:
        worker.close()


def _parse_since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"--since '{value}' is not an ISO date or date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def replay(
    destination: str = typer.Option(..., "--destination", "-d", help="destination name"),
    since: str = typer.Option(..., help="resources changed at or after this ISO time"),
) -> None:
    """Queue every resource changed since T for destination D (e.g. backfill a new one)."""
    config = _destinations()
    config.get(destination)
    route = OutboxRouter.from_config(config).get(destination)
    queued = delivery.enqueue_since(
        _engine(), destination, _parse_since(since),
        resource_types=route.resource_types if route else (),
        wants=route.wants_content if route else None)
    typer.echo(f"queued {queued} resources for {destination}")


@dlq_app.command("list")
def dlq_list(
    destination: str | None = typer.Option(None, "--destination", "-d"),
    kind: str | None = typer.Option(None, help="delivery or inbound"),
    all_: bool = typer.Option(False, "--all", help="include replayed ones"),
    limit: int = typer.Option(100),
) -> None:
    """Open dead letters, newest first: id, kind, destination, resource/message, reason."""
    for row in delivery.list_dead(_engine(), destination=destination, kind=kind, limit=limit,
                                  include_replayed=all_):
        replayed = f"\treplayed {row['replayedAt']}" if row["replayedAt"] else ""
        typer.echo(f"{row['id']}\t{row['kind']}\t{row['destination'] or '-'}\t"
                   f"{row['createdAt']}\t{row['reason']}{replayed}")


@dlq_app.command("show")
def dlq_show(dead_id: int = typer.Argument(...)) -> None:
    """One dead letter with the destination's answer (e.g. its OperationOutcome)."""
    found = delivery.get_dead(_engine(), dead_id)
    if found is None:
        typer.echo(f"hub: no dead letter {dead_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(found, indent=2))


@dlq_app.command("replay")
def dlq_replay(
    dead_ids: list[int] = typer.Argument(None, help="dead letter ids"),
    destination: str | None = typer.Option(None, "--destination", "-d",
                                           help="every open dead letter of this destination"),
) -> None:
    """Send dead letters again (after fixing the cause)."""
    if not dead_ids and not destination:
        typer.echo("hub: name dead letter ids or --destination", err=True)
        raise typer.Exit(1)
    count = delivery.replay_dead(_engine(), dead_ids or None, destination=destination)
    typer.echo(f"replayed {count}")


def keys_jwk(
    alg: str = typer.Option("RS384", help="RS384 (RSA 2048) or ES384 (P-384)"),
    keys_dir: Path | None = typer.Option(None, "--dir", help="default HUB_KEYS_DIR"),
) -> None:
    """Generate a SMART signing key pair; prints the public JWK (served at /.well-known/jwks.json).
    """
    if alg not in ("RS384", "ES384"):
        raise ConfigurationError("--alg must be RS384 or ES384")
    folder = keys_dir or SyncSettings().keys_dir
    key = signing_keys.write_new_key(folder, alg)  # type: ignore[arg-type]
    typer.echo(json.dumps(key.public_jwk(), indent=2))
    typer.echo(f"private key: {folder / (key.kid + '.pem')} (kid {key.kid})", err=True)
