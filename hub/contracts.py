"""The types stages and connectors exchange: the hub's small public SDK.

Data flows one way — connectors → normalize → store → rules → sync — and these types are
what crosses each boundary. Nothing here does I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

import orjson
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
    # What the channel knew beside the body (MQTT: the topic and its levels), as device mappings
    # read it under ``meta``: a device that names itself only in its topic (hub.mappings.extract)
    meta: dict[str, Any] | None = None


def mqtt_meta(topic: str) -> dict[str, Any]:
    """What a device mapping reads of an MQTT message beside its payload, as ``meta``: the
    topic and its levels (``meta.topic_levels[1]`` is ``cuff-7`` for ``rpm/cuff-7/bp``)."""
    return {"channel": "mqtt", "topic": topic, "topic_levels": topic.split("/")}


@dataclass(frozen=True, slots=True)
class Code:
    """A coded concept as FHIR Coding: system URI, code, optional display."""

    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True, slots=True)
class Concept:
    """A CodeableConcept: codings (may be empty) and the sender's text."""

    codings: tuple[Code, ...] = ()
    text: str | None = None


#: FHIR R4 Quantity.comparator codes (http://hl7.org/fhir/R4/valueset-quantity-comparator.html)
COMPARATORS = frozenset({"<", "<=", ">=", ">"})


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured amount. ``unit`` is a UCUM code when known (else None and ``unit_text`` holds
    the sender's unit); ``comparator`` is FHIR's ``<``, ``<=``, ``>=`` or ``>``."""

    value: int | float
    unit: str | None = None
    unit_text: str | None = None
    comparator: str | None = None


@dataclass(frozen=True, slots=True)
class Range:
    """A low..high range (either end may be open)."""

    low: Quantity | None = None
    high: Quantity | None = None


@dataclass(frozen=True, slots=True)
class Ratio:
    numerator: Quantity
    denominator: Quantity


@dataclass(frozen=True, slots=True)
class Samples:
    """Numeric samples (FHIR SampledData): ``dimensions`` values per sampling point, interleaved;
    ``period_ms`` is None when the source did not say."""

    data: tuple[int | float, ...]
    unit: str | None = None
    dimensions: int = 1
    period_ms: float | None = None


@dataclass(frozen=True, slots=True)
class DateTimeText:
    """A date or date-time already written as FHIR dateTime text (keeps the source precision)."""

    text: str


ObservedValue = Quantity | Range | Ratio | Samples | Concept | DateTimeText | str


@dataclass(frozen=True, slots=True)
class ReferenceRange:
    """A reference range: parsed ends when the text was a plain ``low-high``/``<x``/``>x``."""

    text: str
    low: Quantity | None = None
    high: Quantity | None = None


@dataclass(slots=True, eq=False)
class ReportDraft:
    """A report grouping readings (an HL7v2 OBR → DiagnosticReport), as far as the message says.

    ``resource`` is the FHIR resource without ``subject``, ``result`` and ``meta``: those exist
    only once the readings are Observations. Normalize completes it from each Observation it
    builds for a reading whose ``ObservationDetail.report`` is this draft, and puts the report
    into ``sink`` (the Extraction's ``resources``, which the pipeline reads after building the
    readings) with its first result: a report none of whose readings could be built is not
    written.
    """

    resource: dict[str, Any]
    sink: list[dict[str, Any]]


@dataclass(slots=True)
class ObservationDetail:
    """What a richer source (HL7v2 OBX) says about a reading beyond type, time and values.

    All optional; ``hub.normalize`` turns each into its Observation element. ``codings`` are the
    source's own codes: kept beside the catalogue's (dual coding, e.g. MDC + LOINC), or the only
    code when the reading has no catalogue type. ``value`` is the typed value of such a reading
    (or a non-numeric one). ``component_codings`` adds source codes per panel component input.
    """

    codings: tuple[Code, ...] = ()
    code_text: str | None = None
    value: ObservedValue | None = None
    comparator: str | None = None  # on the catalogue quantity
    absent_reason: str | None = None  # http://terminology.hl7.org/CodeSystem/data-absent-reason
    category: str | None = None  # observation-category code, for readings with no catalogue type
    reference_range: tuple[ReferenceRange, ...] = ()
    interpretation: tuple[Concept, ...] = ()
    method: Concept | None = None
    body_site: Concept | None = None
    notes: tuple[str, ...] = ()
    component_codings: dict[str, tuple[Code, ...]] = field(default_factory=dict)
    effective_text: str | None = None  # FHIR dateTime when coarser than seconds (a bare date)
    device_is_equipment: bool = True  # False: ``device`` only identifies the sending system
    gateway: Identifier | None = None  # the gateway that relayed the reading, if not the device
    report: ReportDraft | None = None  # the report (OBR) this reading is a result of


@dataclass(slots=True)
class Measurement:
    """One reading extracted from a payload, before it becomes FHIR.

    ``type`` names an entry of the measurement-type catalogue; ``values`` holds the named inputs
    that entry expects (``value`` for a simple quantity; ``systolic``/``diastolic`` for a panel).
    ``unit`` is the unit the source used, converted by normalize if needed.

    A reading whose code is in no catalogue (an HL7 lab result, an unmapped MDC metric) has
    ``type`` = its identity key (``"system|code"``, plus where in the message when codes repeat),
    ``values`` empty and its typed value in ``detail.value``. ``status`` is the FHIR
    Observation.status (None: final).
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
    status: str | None = None  # FHIR Observation.status; None means final
    detail: ObservationDetail | None = None
    # FHIR Quantity.comparator of a quantity value ("<" 40: below the device's range)
    comparator: str | None = None


@dataclass(frozen=True, slots=True)
class PatientMerge:
    """An instruction to merge patients (HL7 ADT^A40): everything recorded for the patient known
    by ``merged`` identifiers moves to the one known by ``survivor``."""

    survivor: Identifier
    merged: tuple[Identifier, ...]
    location: str | None = None


@dataclass(slots=True)
class Extraction:
    """Everything one inbound message yields: measurements and registry facts.

    Patients and devices given here carry business identifiers; the pipeline binds every one of
    them in the identity registry (so a later reading naming any of them finds this resource).
    ``resources`` is read once the measurements are built: reports (``ReportDraft``) join it as
    their readings become Observations.
    """

    measurements: list[Measurement] = field(default_factory=list)
    patients: list[dict[str, Any]] = field(default_factory=list)  # Patient resources to upsert
    devices: list[dict[str, Any]] = field(default_factory=list)  # Device resources to upsert
    resources: list[dict[str, Any]] = field(default_factory=list)  # FHIR resources given as-is
    errors: list[DataError] = field(default_factory=list)  # items that could not be extracted
    merges: list[PatientMerge] = field(default_factory=list)  # patient merges to apply
    # FHIR conditional creates: (type, id) → the ``identifier=system|value`` they were made on
    # (None: the id alone). The pipeline writes such a resource only when no match is stored,
    # deciding under the write lock; a match is left as it is (R4 conditional create).
    create_only: dict[tuple[str, str], tuple[str, str] | None] = field(default_factory=dict)


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


UTF8_BOM = b"\xef\xbb\xbf"


def decode_json(body: bytes) -> Any:
    """The JSON document in ``body`` (a UTF-8 byte-order mark is ignored, as some vendor exports
    carry one); DataError, naming the position, when the body is not JSON."""
    try:
        return orjson.loads(body.removeprefix(UTF8_BOM))
    except orjson.JSONDecodeError as exc:
        raise DataError(f"body is not JSON ({exc.msg} at character {exc.pos})") from None


def account_envelope(document: Any, hint: str) -> dict[str, Any]:
    """Check the hub's account envelope ``{"account": id, "response": <vendor answer>}`` that
    vendor-cloud answers are posted in (they do not say whose data they hold); the account is a
    non-empty string or a number (Withings and iHealth user ids are numbers); ``hint`` tells the
    sender how to wrap. Returns the document."""
    if not isinstance(document, dict) or "response" not in document:
        raise DataError(f"not in the account envelope; {hint}", location="$")
    account = document.get("account")
    if isinstance(account, bool) or not isinstance(account, str | int) or account == "":
        raise DataError(f"account missing; {hint}", location="account")
    return document


class EnvelopeConnector(Connector):
    """A vendor cloud's JSON answers posted in the account envelope (``account_envelope``).

    ``decode`` is the same for every such vendor: JSON, the envelope (``envelope_hint`` tells a
    sender how to wrap), then ``check_answer`` on the vendor's answer, which raises DataError
    (location ``response...``) when it is not that vendor's data (an error answer, another API's
    shape)."""

    envelope_hint: ClassVar[str]

    def decode(self, body: bytes, content_type: str) -> JSON:
        document: dict[str, Any] = account_envelope(decode_json(body), self.envelope_hint)
        self.check_answer(document["response"])
        return document

    @abstractmethod
    def check_answer(self, response: Any) -> None:
        """Raise DataError when ``response`` is not data in this vendor's answer format."""
