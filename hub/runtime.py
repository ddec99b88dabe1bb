"""The composition root: builds the hub's parts from Settings (used by the CLI and the API)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from hub.errors import ConfigurationError
from hub.identity import IdentityModes
from hub.mappings.live import LiveMappings
from hub.normalize import units
from hub.pipeline import Pipeline
from hub.prepare_pool import Preparer
from hub.registry import ConnectorRegistry
from hub.rules.engine import RulesEngine
from hub.settings import Settings
from hub.store.db import make_engine
from hub.sync.config import DestinationsFile, load_destinations, resolve_destinations_file
from hub.sync.routing import OutboxRouter
from hub.sync.settings import SyncSettings
from hub.telemetry import Telemetry
from hub.worker import run_worker, tune_gc


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
    # Channels running in this process (MLLP listener, MQTT subscriber) register how to ask
    # their state here, by name; ``/ready`` reports them (``hub.api.health``).
    channel_states: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)

    def start_worker_thread(self, stop: threading.Event) -> threading.Thread:
        """The inbox worker in a daemon thread of this process (``hub serve``'s inline worker,
        ``hub mllp|mqtt --worker``), with this hub's settings; it runs until ``stop`` is set."""
        thread = threading.Thread(
            target=run_worker, name="hub-worker", daemon=True,
            args=(self.pipeline, self.engine, stop),
            kwargs={"batch": self.settings.worker_batch,
                    "poll_secs": self.settings.worker_poll_secs, "mappings": self.mappings})
        thread.start()
        return thread

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


def preparer(settings: Settings) -> Preparer:
    """What a preparing process of ``hub worker --prepare-procs`` runs (``hub.prepare_pool``):
    its own hub from the worker's settings."""
    tune_gc()
    hub = Hub.build(settings)
    return hub.pipeline, hub.engine, hub.mappings.refresh
