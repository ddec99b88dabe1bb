"""The MQTT channel's configuration: ``HUB_MQTT_*`` settings and the subscriptions file.

The file (``HUB_MQTT_FILE``, else ``./mqtt.yaml`` when present; example
``mappings/mqtt.example.yaml``) says which broker to use and which topic filters feed which
source (connector). It is validated like the mapping files: every problem at once, as
``file:line:column: field: problem``. Secrets never sit in the file: ``password_env`` names the
environment variable that holds the broker password.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.errors import ConfigurationError
from hub.mappings.yamlfile import load_model

DEFAULT_FILE = Path("mqtt.yaml")
SHARE_PREFIX = "$share/"


class MqttSettings(BaseSettings):
    """Whether ``hub serve`` runs the MQTT channel and where its file is."""

    model_config = SettingsConfigDict(env_prefix="HUB_", env_file=".env", extra="ignore")

    mqtt_enabled: bool = Field(True, description="hub serve subscribes when a file is found")
    mqtt_file: Path | None = Field(None, description="default: ./mqtt.yaml when it exists")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Strict):
    """TLS to the broker (port 8883 by convention)."""

    ca_file: Path | None = Field(None, description="PEM bundle; default: the system's CAs")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="its private key (if not in cert_file)")
    check_hostname: bool = Field(True, description="false only for test brokers")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class BrokerConfig(_Strict):
    """The broker and the hub's session on it."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
        description="names the persistent session: stable, and unique per hub process")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT version")
    keepalive_secs: int = Field(60, ge=5, le=65535)
    session_expiry_secs: int | None = Field(
        None, ge=1, le=0xFFFFFFFE, description="MQTT 5: how long the broker keeps the session "
        "(and queues messages) while the hub is away; default: never expires")
    username: str | None = None
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                     description="environment variable holding the password")
    tls: TlsConfig | None = None
    reconnect_min_secs: int = Field(1, ge=1, le=3600)
    reconnect_max_secs: int = Field(60, ge=1, le=3600)
    receive_maximum: int = Field(64, ge=1, le=65535, description="MQTT 5: most unacknowledged "
                                 "messages in flight to the hub (back-pressure)")

    @field_validator("protocol", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value  # YAML reads 5 as a number

    @model_validator(mode="after")
    def _consistent(self) -> BrokerConfig:
        if self.reconnect_max_secs < self.reconnect_min_secs:
            raise ValueError("reconnect_max_secs is below reconnect_min_secs")
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env needs username")
        if self.session_expiry_secs is not None and self.protocol != "5":
            raise ValueError("session_expiry_secs is MQTT 5 only (3.1.1 sessions last until "
                             "the broker's persistent_client_expiration)")
        return self

    def password(self) -> str | None:
        """The password from ``password_env``; ConfigurationError if that variable is unset."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigurationError(f"{self.password_env} (broker.password_env) is not set")
        return value


class Subscription(_Strict):
    """A topic filter and the source (connector) its messages are for."""

    filter: str = Field(description="MQTT topic filter; + one level, # the rest; "
                        "$share/GROUP/FILTER to share the messages between hubs (MQTT 5)")
    source: str = Field(description="connector name, as in POST /ingest/{source}")
    qos: int = Field(1, description="1 (at least once, acknowledged after the durable write)")
    content_type: str | None = Field(None, description="default: the source's JSON type")
    dedupe_property: str | None = Field(
        None, min_length=1, description="MQTT 5 user property holding the publisher's message "
        "id; a repeat of that id is not stored again")

    @field_validator("filter")
    @classmethod
    def _valid_filter(cls, value: str) -> str:
        problem = filter_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("qos")
    @classmethod
    def _qos_one(cls, value: int) -> int:
        if value != 1:
            raise ValueError("must be 1: QoS 0 can be lost in transit, and with QoS 2 the "
                             "client confirms (PUBREC) before the hub has stored the message")
        return value

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("sources")
        if known is not None and value not in known:
            raise ValueError(f"unknown source '{value}' (known: {', '.join(sorted(known))})")
        return value

    @property
    def match_filter(self) -> str:
        """The filter topics are matched against (without a ``$share/GROUP/`` prefix)."""
        return self.filter.split("/", 2)[2] if self.filter.startswith(SHARE_PREFIX) \
            else self.filter


class MqttFile(_Strict):
    """``mqtt.yaml``: one broker, and the subscriptions that feed the inbox."""

    version: Literal[1]
    broker: BrokerConfig
    subscriptions: list[Subscription] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_filters(self) -> MqttFile:
        seen: set[str] = set()
        for sub in self.subscriptions:
            if sub.filter in seen:
                raise ValueError(f"topic filter '{sub.filter}' is listed twice")
            seen.add(sub.filter)
        if self.broker.protocol != "5":
            if any(s.filter.startswith(SHARE_PREFIX) for s in self.subscriptions):
                raise ValueError("$share subscriptions need protocol 5")
            if any(s.dedupe_property for s in self.subscriptions):
                raise ValueError("dedupe_property needs protocol 5 (user properties)")
        return self

    def route(self, topic: str) -> Subscription | None:
        """The first subscription, in file order, whose filter matches ``topic``."""
        for sub in self.subscriptions:
            if topic_matches(sub.match_filter, topic):
                return sub
        return None


def filter_problem(value: str) -> str | None:
    """What is wrong with a topic filter (MQTT 5 section 4.7), or None."""
    if not value:
        return "empty topic filter"
    if "\x00" in value:
        return "topic filter contains a NUL character"
    if len(value.encode("utf-8")) > 65535:
        return "topic filter longer than 65535 bytes"
    if value.startswith(SHARE_PREFIX):
        parts = value.split("/", 2)
        if len(parts) < 3 or not parts[1] or "+" in parts[1] or "#" in parts[1] or not parts[2]:
            return "shared subscription must be $share/GROUP/FILTER"
        value = parts[2]
    levels = value.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def topic_matches(filter_: str, topic: str) -> bool:
    """Whether ``topic`` matches ``filter_`` (MQTT 5 section 4.7: ``+`` one level, ``#`` this
    level and all below, including the parent; filters starting with a wildcard do not match
    topics starting with ``$``)."""
    if topic.startswith("$") and filter_[:1] in ("+", "#"):
        return False
    want, have = filter_.split("/"), topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(have):
            return False
        if level != "+" and level != have[index]:
            return False
    return len(want) == len(have)


def resolve_file(configured: Path | None) -> Path | None:
    """``HUB_MQTT_FILE`` if set (it must exist), else ``./mqtt.yaml`` if present, else None."""
    if configured is not None:
        if not configured.is_file():
            raise ConfigurationError(f"HUB_MQTT_FILE {configured} does not exist")
        return configured
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def load_mqtt_file(path: Path, sources: list[str] | None = None) -> MqttFile:
    """Validate the MQTT file (against the registered ``sources`` when given); every problem
    at once, raised as a ConfigurationError naming file:line:column and field."""
    context = {"sources": set(sources)} if sources is not None else None
    return load_model(path, MqttFile, context=context, what="MQTT file", error=ConfigurationError)
