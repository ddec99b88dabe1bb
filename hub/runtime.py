"""The composition root: builds the hub's parts from Settings (used by the CLI and the API)."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from hub.errors import ConfigurationError
from hub.mappings.live import LiveMappings
from hub.pipeline import Pipeline
from hub.registry import ConnectorRegistry
from hub.settings import Settings
from hub.store.db import make_engine
from hub.telemetry import Telemetry


@dataclass
class Hub:
    """One process's hub: settings, database engine, live mappings, connectors and pipeline."""

    settings: Settings
    engine: Engine
    mappings: LiveMappings
    connectors: ConnectorRegistry
    pipeline: Pipeline
    telemetry: Telemetry

    @classmethod
    def build(cls, settings: Settings, telemetry: Telemetry | None = None) -> Hub:
        try:
            tz = ZoneInfo(settings.default_timezone)
        except (KeyError, ValueError):
            raise ConfigurationError(
                f"HUB_DEFAULT_TIMEZONE '{settings.default_timezone}' is not a known time zone"
            ) from None
        telemetry = telemetry or Telemetry.from_env()
        engine = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        mappings = LiveMappings(settings.mappings_dir, tz)
        connectors = ConnectorRegistry.discover()
        pipeline = Pipeline(connectors=connectors, mappings=mappings, telemetry=telemetry)
        return cls(settings, engine, mappings, connectors, pipeline, telemetry)
