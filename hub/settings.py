"""Process settings, read from ``HUB_*`` environment variables (and ``.env``).

Only the composition roots (the CLI and the API app factory) build a ``Settings``; every other
module receives the values it needs as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "changethis"  # noqa: S105 - the sentinel that production refuses
REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_mappings_dir() -> Path:
    """``./mappings`` if the working directory has one, else the one shipped beside the package."""
    local = Path("mappings")
    return local if local.is_dir() else REPO_ROOT / "mappings"


def check_rate_limit(text: str) -> str:
    """``text`` if it is a rate limit in the ``limits`` notation ("20/second;1000/minute", the
    notation of Flask-Limiter and slowapi), else ValueError saying so."""
    try:
        parse_many(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a rate limit; write e.g. '20/second' or "
                         "'20/second;1000/minute'") from None
    return text.strip()


class Settings(BaseSettings):
    """Everything an operator can set. Names map to ``HUB_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="HUB_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = Field(
        "development", description="production refuses default secrets"
    )
    database_url: str = Field(
        "sqlite:///var/hub.db",
        description="sqlite:///path (default, under the working directory) or "
        "postgresql+psycopg://user@host/db",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="FULL fsyncs every commit so an acknowledged message survives power loss; "
        "NORMAL survives process crashes only",
    )
    secret_key: SecretStr = Field(
        SecretStr(DEFAULT_SECRET), description="HMAC key for API-key hashes (pepper)"
    )
    max_body_bytes: int = Field(5 * 1024 * 1024, description="request bodies above this get 413")
    rate_limit: str | None = Field(
        None, description='requests each API key may make, e.g. "50/second;2000/minute" (over '
        "it: 429 with Retry-After); a key's own limit (hub keys create --rate-limit) wins; "
        "unset: no limit but the keys' own")
    rate_limit_storage: str = Field(
        "memory://", description="where request counts live: memory:// counts per process; "
        "redis://host:6379 shares one count between every hub serve process")
    mappings_dir: Path = Field(default_factory=_default_mappings_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    inline_worker: bool = Field(True, description="hub serve also processes the inbox")
    # A SQLite commit rewrites, whole, every page it touched, and the resource ids are random,
    # so a commit of few rows writes about a page a row (32 KiB pages when this was measured):
    # 64 HL7v2 messages (~4 rows each) a commit spent more of the worker's time in WAL writes
    # than in mapping. 512: worker CPU ~405 -> ~305 µs a message, bench.hl7_mllp 2,149-2,227 ->
    # 2,989-3,311 msg/s. Large messages (500 canonical readings) stop a batch at batch_seconds of
    # work first, so this changes nothing for them (make bench: same figures on both backends);
    # a claim also stops at hub.store.inbox.CLAIM_BYTES of bodies.
    worker_batch: int = Field(512, ge=1, description="inbound messages claimed per worker "
                              "transaction, at most (a batch also commits after 0.25 s of work)")
    worker_poll_secs: float = Field(0.05, description="idle wait between empty inbox polls")
    worker_prepare_procs: int = Field(
        0, ge=0, description="hub worker: processes preparing messages for it to commit (0: the "
        "worker prepares them itself); see README § Performance")
    worker_commit_rows: int = Field(
        10_000, ge=1, description="hub worker with prepare processes: rows per commit, at most")
    default_timezone: str = Field("UTC", description="for source times that carry no offset")
    mllp_enabled: bool = Field(True, description="hub serve also listens for HL7v2 over MLLP")
    mllp_host: str = Field("127.0.0.1", description="MLLP listen address (0.0.0.0: every "
                           "interface; MLLP has no authentication, place it on a trusted network)")
    mllp_port: int = Field(2575, description="MLLP listen port (2575 is HL7's registered port)")
    mllp_max_frame_bytes: int = Field(10 * 1024 * 1024, description="larger frames get an AR")
    mllp_idle_timeout_secs: float = Field(600.0, description="idle MLLP connections are closed")
    mllp_max_connections: int = Field(256, description="connections beyond this are refused")
    hl7_dedupe_window_secs: float = Field(
        86400.0, gt=0, description="a repeat of MSH-3+4+10 within this many seconds gets the "
        "original ACK and is not ingested again")

    identity_mode: Literal["create", "lookup"] = Field(
        "create", description="how readings naming an unregistered device or patient are "
        "handled: create registers it on first sight; lookup holds the reading in quarantine "
        "until it is registered (and the device assigned)")
    identity_modes: dict[str, Literal["create", "lookup"]] = Field(
        default_factory=dict, description='per source, overriding identity_mode, as JSON: '
        '{"withings": "lookup"}')

    @field_validator("rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else check_rate_limit(value)

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.env == "production" and self.secret_key.get_secret_value() == DEFAULT_SECRET:
            raise ValueError(
                "HUB_SECRET_KEY is still the default; set a random value in production"
            )
        return self
