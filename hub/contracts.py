"""The types stages and connectors exchange: the hub's small public SDK.

Data flows one way — connectors → normalize → store → rules → sync — and these types are
what crosses each boundary. Nothing here does I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from hub.errors import DataError

JSON = Any  # a decoded JSON document (dict / list / str / number / bool / None)


@dataclass(frozen=True, slots=True)
class Identifier:
    """A business identifier (FHIR Identifier system + value)."""

    system: str
    value: str

    def token(self) -> str:
        return f"{self.system}|{self.value}"


@dataclass(slots=True)
class RawMessage:
    """One inbound message exactly as received, plus where it came from."""

    id: str
    source: str
    content_type: str
    body: bytes
    received_at: datetime
    traceparent: str | None = None  # W3C trace context of the intake, to continue its trace


@dataclass(slots=True)
class Measurement:
    """One reading extracted from a payload, before it becomes FHIR.

    ``type`` names an entry of the measurement-type catalogue; ``values`` holds the named inputs
    that entry expects (``value`` for a simple quantity; ``systolic``/``diastolic`` for a panel).
    ``unit`` is the unit the source used, converted by normalize if needed.
    """

    type: str
    time: datetime
    device: Identifier
    values: dict[str, Any]
    unit: str | None = None
    patient: Identifier | None = None
    correlation_id: str | None = None
    mapping: str | None = None  # "file@version" of the device mapping that produced it
    location: str | None = None  # where in the payload (for errors), never the values


@dataclass(slots=True)
class Extraction:
    """Everything one inbound message yields: measurements and registry facts."""

    measurements: list[Measurement] = field(default_factory=list)
    patients: list[dict[str, Any]] = field(default_factory=list)  # Patient resources to upsert
    devices: list[dict[str, Any]] = field(default_factory=list)  # Device resources to upsert
    resources: list[dict[str, Any]] = field(default_factory=list)  # FHIR resources given as-is
    errors: list[DataError] = field(default_factory=list)  # items that could not be extracted


class MeasurementExtractor(Protocol):
    """Runs a named device mapping over a decoded document (provided by the hub)."""

    def extract(self, mapping: str, document: JSON) -> Extraction:
        """Measurements found, plus one DataError per item that could not be read."""
        ...


class ConnectorConfig(BaseModel):
    """Base for a connector's settings. ``mapping`` picks the device mapping file by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mapping: str | None = None


class Connector(ABC):
    """A source format: decodes a vendor's bytes and extracts measurements.

    Contract: ``decode`` is cheap and called on the ingest path *before* the 2xx, so a body that
    cannot be decoded is answered 4xx (and still kept with the reason). ``extract`` runs in the
    worker. Both raise ``hub.errors.DataError`` for bad input and never do I/O. A connector imports
    only ``hub.contracts``, ``hub.errors`` and low-level parsing helpers — never the store or
    another connector.
    """

    name: ClassVar[str]
    content_types: ClassVar[frozenset[str]] = frozenset({"application/json"})
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, config: ConnectorConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @property
    def mapping_name(self) -> str:
        """The device mapping this connector runs (default: one named after the connector)."""
        return self.config.mapping or self.name

    @abstractmethod
    def decode(self, body: bytes, content_type: str) -> JSON:
        """Parse the body; raise DataError when it is not this source's format."""

    def event_id(self, document: JSON) -> str | None:
        """The vendor's own event id for deduplication, when the format has one."""
        return None

    def extract(self, document: JSON, mappings: MeasurementExtractor) -> Extraction:
        """Turn a decoded document into measurements; default: run the device mapping."""
        return mappings.extract(self.mapping_name, document)
