"""The composition root: builds the hub's parts from Settings (used by the CLI and the API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from hub.errors import ConfigurationError
from hub.identity import IdentityModes
from hub.mappings.live import LiveMappings
from hub.normalize import units
from hub.pipeline import Pipeline
from hub.registry import ConnectorRegistry
from hub.rules.engine import RulesEngine
from hub.settings import Settings
from hub.store.db import make_engine
from hub.sync.config import DestinationsFile, load_destinations, resolve_destinations_file
from hub.sync.routing import OutboxRouter
from hub.sync.settings import SyncSettings
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
    sync_settings: SyncSettings = field(default_factory=SyncSettings)
    destinations: DestinationsFile = field(default_factory=DestinationsFile)

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
        # Unit conversions compile when a set loads, so a broken declaration refuses the set and
        # the first converted reading does not pay the UCUM library's start-up (~0.4 s).
        mappings = LiveMappings(settings.mappings_dir, tz,
                                check=lambda found: units.warm(found.types.values()))
        connectors = ConnectorRegistry.discover()
        # Sync: the destinations file decides which outbox rows each written resource gets.
        sync_settings = SyncSettings()
        dest_file = resolve_destinations_file(sync_settings.destinations_file)
        destinations = load_destinations(dest_file) if dest_file else DestinationsFile()
        rules = RulesEngine(settings.mappings_dir / "rules")  # a broken rules file is fatal here
        modes = IdentityModes.configured(settings.identity_mode, settings.identity_modes,
                                         connectors.names())
        pipeline = Pipeline(connectors=connectors, mappings=mappings, telemetry=telemetry,
                            router=OutboxRouter.from_config(destinations), rules=rules,
                            identity_modes=modes)
        return cls(settings, engine, mappings, connectors, pipeline, telemetry, sync_settings,
                   destinations)
