"""Sync's own settings (``HUB_*`` variables), built by the composition roots only.

Kept apart from :mod:`hub.settings` so the sync feature owns its knobs; the names follow the same
``HUB_`` convention and ``.env`` file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SyncSettings(BaseSettings):
    """Where the destinations and signing keys are, and how the sync worker paces itself."""

    model_config = SettingsConfigDict(env_prefix="HUB_", env_file=".env", extra="ignore")

    destinations_file: Path | None = Field(
        None, description="default: ./destinations.yaml when it exists (else no destinations)")
    keys_dir: Path = Field(Path("var/keys"), description="SMART private keys (`hub keys jwk`); "
                           "their public halves are served at /.well-known/jwks.json")
    sync_inline: bool = Field(True, description="hub serve also runs the sync worker")
    sync_poll_secs: float = Field(0.2, description="idle wait between empty outbox polls")
    sync_lease_secs: float = Field(300.0, description="a claimed item not finished within "
                                   "this is claimed again (the worker died)")
