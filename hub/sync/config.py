"""The destinations file: where resources go, how to reach each destination, at what pace.

Read with :func:`hub.mappings.yamlfile.read_yaml` and validated like mapping files, so every
problem is reported at once as ``file:line:column: field: problem`` (the position skips the
discriminator tags pydantic puts in union paths). Secrets never sit in
the file: a field ending in ``_env`` names the environment variable that holds the value.

Example: ``mappings/destinations.example.yaml``; reference: ``docs/sync.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from hub.errors import ConfigurationError
from hub.mappings.yamlfile import load_model

NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteSpec(_Strict):
    """Which resources a destination takes. An empty list means "any"."""

    resource_types: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list,
                                  description="category codes, e.g. vital-signs, laboratory")
    programs: list[str] = Field(default_factory=list,
                                description="meta.tag codes of system urn:iomt-fhir-hub:program")


class Limits(_Strict):
    """Pace and shape of writes. ``None`` means "take the profile's value" (HealthLake)."""

    bundle: Literal["batch", "transaction", "none"] = "batch"
    bundle_size: int | None = Field(None, ge=1, le=10_000)
    patient_entries_per_bundle: int | None = Field(
        None, ge=1, description="at most this many entries of one patient per Bundle; 1 makes "
        "order per patient strict even when a batch entry fails alone")
    requests_per_sec: float | None = Field(None, gt=0)
    entries_per_sec: float | None = Field(None, gt=0, description="write-capacity budget; a "
                                          "transaction entry costs 2 when transaction_cost is 2")
    transaction_cost: int = Field(1, ge=1, le=10)
    concurrency: int = Field(2, ge=1, le=64)
    timeout_secs: float = Field(30.0, gt=0)
    deadline_secs: float = Field(24 * 3600.0, gt=0, description="then dead-letter")
    max_backoff_secs: float = Field(64.0, gt=0)
    circuit_failures: int = Field(5, ge=1, description="consecutive failed requests to open")
    circuit_open_secs: float = Field(30.0, gt=0)


class NoAuth(_Strict):
    kind: Literal["none"] = "none"


class BearerAuth(_Strict):
    kind: Literal["bearer"]
    token_env: str


class BasicAuth(_Strict):
    """Oracle Health system accounts use a client secret over HTTP Basic."""

    kind: Literal["basic"]
    username_env: str
    password_env: str


class SmartAuth(_Strict):
    """SMART Backend Services: client_credentials with a private_key_jwt assertion."""

    kind: Literal["smart"]
    client_id: str
    token_url: HttpUrl
    private_key_file: Path = Field(description="PEM written by `hub keys jwk`")
    kid: str | None = Field(None, description="default: the key's RFC 7638 thumbprint")
    alg: Literal["RS384", "ES384"] = "RS384"
    scopes: list[str] = Field(default_factory=lambda: ["system/Observation.cu"], min_length=1)
    skew_secs: float = Field(30.0, ge=0)


class SigV4Auth(_Strict):
    """AWS SigV4 through botocore; credentials from its chain (env, profile, instance role)."""

    kind: Literal["sigv4"]
    region: str | None = None
    profile: str | None = None


Auth = Annotated[NoAuth | BearerAuth | BasicAuth | SmartAuth | SigV4Auth,
                 Field(discriminator="kind")]


class EhrProfile(_Strict):
    """An EHR's write rules applied before sending (``hub.sync.profiles``)."""

    name: Literal["none", "oracle-health", "epic-vitals"] = "none"
    flowsheets: dict[str, str] = Field(default_factory=dict,
                                       description="Epic: LOINC code → flowsheet row id")
    flowsheet_system: str | None = Field(None, description="Epic: the flowsheet id system (OID)")
    bp_as_string: bool = Field(True, description="Epic: BP panel as valueString '118/77'")


class _Destination(_Strict):
    name: str = Field(pattern=NAME_RE)
    enabled: bool = True
    route: RouteSpec = Field(default_factory=RouteSpec)
    limits: Limits = Field(default_factory=Limits)


class FhirDestination(_Destination):
    """A FHIR R4 REST server (an EHR, a FHIR store, another hub)."""

    type: Literal["fhir"]
    base_url: HttpUrl
    auth: Auth = Field(default_factory=NoAuth)
    write_mode: Literal["auto", "put", "conditional", "create"] = Field(
        "auto", description="auto: read the CapabilityStatement (updateCreate, conditionalCreate)")
    profile: EhrProfile = Field(default_factory=EhrProfile)


HealthLakeTier = Literal["legacy", "current"]


class HealthLakeDestination(_Destination):
    """An AWS HealthLake data store, signed with SigV4 (service ``healthlake``)."""

    type: Literal["healthlake"]
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    datastore_id: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")
    tier: HealthLakeTier = "current"
    endpoint_url: HttpUrl | None = Field(None, description="override (tests, VPC endpoints)")
    auth: SigV4Auth = Field(default_factory=lambda: SigV4Auth(kind="sigv4"))

    @property
    def base_url(self) -> str:
        """``https://healthlake.{region}.amazonaws.com/datastore/{id}/r4/``."""
        host = (str(self.endpoint_url).rstrip("/") if self.endpoint_url
                else f"https://healthlake.{self.region}.amazonaws.com")
        return f"{host}/datastore/{self.datastore_id}/r4/"


class Hl7v2Destination(_Destination):
    """ORU^R01 over MLLP to an interface engine."""

    type: Literal["hl7v2"]
    host: str
    port: int = Field(ge=1, le=65535)
    sending_application: str = "IOMT-HUB"
    sending_facility: str = "HUB"
    receiving_application: str = ""
    receiving_facility: str = ""
    version: Literal["2.5.1", "2.6"] = "2.5.1"
    ack_timeout_secs: float = Field(30.0, gt=0)


class AckSenders(_Strict):
    """Whose messages: MSH-3.1 / MSH-4.1 of the original; an omitted one matches any."""

    sending_application: str | None = None
    sending_facility: str | None = None

    def matches(self, application: str, facility: str) -> bool:
        return ((self.sending_application is None or self.sending_application == application)
                and (self.sending_facility is None or self.sending_facility == facility))


class Hl7v2AckDestination(_Destination):
    """Where the deferred HL7v2 application ACKs (enhanced mode) of some senders go: their
    MLLP return address. Takes no resources (``route`` must stay empty)."""

    type: Literal["hl7v2-ack"]
    host: str
    port: int = Field(ge=1, le=65535)
    match: AckSenders = Field(default_factory=AckSenders,
                              description="the original messages whose ACKs go here; empty: all")
    accept_ack: Literal["AL", "NE"] = Field(
        "AL", description="MSH-15 of our ACK: AL asks the sender for an accept ACK and waits for "
        "it (delivered on CA/AA); NE sends without waiting (delivered once written)")
    ack_timeout_secs: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _no_route(self) -> Hl7v2AckDestination:
        if self.route != RouteSpec():
            raise ValueError("an hl7v2-ack destination takes no resources: remove `route`")
        return self


AnyDestination = (FhirDestination | HealthLakeDestination | Hl7v2Destination
                  | Hl7v2AckDestination)
Destination = Annotated[AnyDestination, Field(discriminator="type")]


class DestinationsFile(_Strict):
    version: Literal[1] = 1
    destinations: list[Destination] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> DestinationsFile:
        seen: set[str] = set()
        for dest in self.destinations:
            if dest.name in seen:
                raise ValueError(f"destination name '{dest.name}' is used twice")
            seen.add(dest.name)
        return self

    def get(self, name: str) -> AnyDestination:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        known = ", ".join(d.name for d in self.destinations) or "none configured"
        raise ConfigurationError(f"no destination named '{name}' ({known})")

    @property
    def enabled(self) -> list[AnyDestination]:
        return [d for d in self.destinations if d.enabled]


def load_destinations(path: Path) -> DestinationsFile:
    """Validate the destinations file; every problem at once, as ``file:line:col``.

    Raises :class:`ConfigurationError` listing the problems (YAML syntax errors included).
    """
    return load_model(path, DestinationsFile, what="destinations file",
                      error=ConfigurationError)


def resolve_destinations_file(configured: Path | None) -> Path | None:
    """``HUB_DESTINATIONS_FILE`` if set (it must exist), else ``./destinations.yaml`` if present."""
    if configured is not None:
        if not configured.is_file():
            raise ConfigurationError(f"HUB_DESTINATIONS_FILE {configured} does not exist")
        return configured
    default = Path("destinations.yaml")
    return default if default.is_file() else None
