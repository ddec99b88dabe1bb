"""``hub db upgrade``."""

from __future__ import annotations

import typer

from hub.settings import Settings
from hub.store.db import upgrade as run_upgrade

app = typer.Typer(no_args_is_help=True, help="Database schema")


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Alembic revision")) -> None:
    """Create or migrate the schema (SQLite or PostgreSQL, per HUB_DATABASE_URL)."""
    settings = Settings()
    run_upgrade(settings.database_url, revision)
    typer.echo(f"database at revision {revision}")
