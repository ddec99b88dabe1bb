"""``hub mqtt``: the MQTT channel alone; and the helper ``hub serve`` starts it with."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

from hub.channels.mqtt import MqttChannel
from hub.channels.mqtt_config import MqttSettings, resolve_file
from hub.errors import ConfigurationError
from hub.runtime import Hub
from hub.settings import Settings
from hub.store.db import upgrade

log = logging.getLogger("hub.mqtt")


def start_beside_api(hub: Hub) -> MqttChannel | None:
    """For ``hub serve``: subscribe when an MQTT file is configured (HUB_MQTT_FILE or
    ./mqtt.yaml) and HUB_MQTT_ENABLED is not false. An invalid file stops the hub
    (ConfigurationError); an unreachable broker does not: the channel keeps reconnecting."""
    settings = MqttSettings()
    if not settings.mqtt_enabled:
        return None
    path = resolve_file(settings.mqtt_file)
    if path is None:
        return None
    channel = MqttChannel.from_file(hub, path)
    channel.start()
    return channel


def mqtt(
    config: Path | None = typer.Option(None, "--config", "-c",
                                       help="MQTT file (default HUB_MQTT_FILE or ./mqtt.yaml)"),
    worker: bool = typer.Option(False, "--worker/--no-worker",
                                help="also process the inbox in this process"),
    migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="run hub db upgrade first"),
) -> None:
    """Subscribe to the configured topics; each message is stored, then acknowledged (QoS 1)."""
    path = config if config is not None else resolve_file(MqttSettings().mqtt_file)
    if path is None:
        raise ConfigurationError("no MQTT file: pass --config, set HUB_MQTT_FILE or create "
                                 "./mqtt.yaml (example: mappings/mqtt.example.yaml)")
    if not path.is_file():
        raise ConfigurationError(f"MQTT file {path} does not exist")
    settings = Settings()
    if migrate:
        upgrade(settings.database_url)
    hub = Hub.build(settings)
    channel = MqttChannel.from_file(hub, path)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = hub.start_worker_thread(stop) if worker else None
    channel.start()
    try:
        stop.wait()
    finally:
        channel.stop()
        if thread is not None:
            thread.join(timeout=30)
        hub.engine.dispose()
    log.info("MQTT channel stopped; %d stored, %d duplicates, %d acknowledged",
             channel.stats.stored, channel.stats.duplicates, channel.stats.acked)
