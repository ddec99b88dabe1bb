"""``hub keys create|list|limit|revoke``: API keys for vendors and EHR teams."""

from __future__ import annotations

import typer
from sqlalchemy.engine import Engine

from hub.settings import Settings
from hub.store import api_keys
from hub.store.db import make_engine

app = typer.Typer(no_args_is_help=True, help="API keys")


def _engine_and_secret() -> tuple[Engine, str]:
    settings = Settings()
    return make_engine(settings.database_url), settings.secret_key.get_secret_value()


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="who holds the key (vendor or team)"),
    source: list[str] = typer.Option(..., "--source", help="source it may post to; * for all"),
    rate_limit: str | None = typer.Option(
        None, "--rate-limit", help='its own request-rate limit, e.g. "20/second;1000/minute" '
        "(default: HUB_RATE_LIMIT)"),
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    engine, secret = _engine_and_secret()
    key = api_keys.create(engine, secret, name, source, rate_limit)
    typer.echo(key)


@app.command("list")
def list_() -> None:
    """Keys by name, with their prefix, sources and state (never the key)."""
    engine, _ = _engine_and_secret()
    for row in api_keys.list_keys(engine):
        state = "revoked" if row["revoked_at"] else "active"
        limit = row["rate_limit"] or "default rate limit"
        typer.echo(f"{row['name']}\t{row['prefix']}…\t{row['sources']}\t{limit}\t{state}")


@app.command("limit")
def limit(
    name: str = typer.Argument(..., help="key name"),
    rate_limit: str = typer.Argument(
        ..., help='e.g. "20/second;1000/minute", or "default" for HUB_RATE_LIMIT'),
) -> None:
    """Set a key's own request-rate limit; running hubs apply it from the key's next request."""
    engine, _ = _engine_and_secret()
    own = None if rate_limit == "default" else rate_limit
    if not api_keys.set_rate_limit(engine, name, own):
        typer.echo(f"hub: no active key named '{name}'", err=True)
        raise typer.Exit(1)
    typer.echo(f"{name}: {own or 'default rate limit'}")


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="key name")) -> None:
    """Revoke a key at once."""
    engine, _ = _engine_and_secret()
    if not api_keys.revoke(engine, name):
        typer.echo(f"hub: no active key named '{name}'", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")
