"""``hub keys create|list|revoke``: API keys for vendors and EHR teams."""

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
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    engine, secret = _engine_and_secret()
    key = api_keys.create(engine, secret, name, source)
    typer.echo(key)


@app.command("list")
def list_() -> None:
    """Keys by name, with their prefix, sources and state (never the key)."""
    engine, _ = _engine_and_secret()
    for row in api_keys.list_keys(engine):
        state = "revoked" if row["revoked_at"] else "active"
        typer.echo(f"{row['name']}\t{row['prefix']}…\t{row['sources']}\t{state}")


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="key name")) -> None:
    """Revoke a key at once."""
    engine, _ = _engine_and_secret()
    if not api_keys.revoke(engine, name):
        typer.echo(f"hub: no active key named '{name}'", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")
