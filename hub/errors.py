"""Every error the hub raises on purpose, grouped by how to recover from it.

::

    HubError                    message is safe to show a user; internal_message is for operators
    ├── ConfigurationError      a setting or config file is wrong: fix it, restart (fatal at start)
    ├── MappingError            a mapping file is wrong: refuse the file, keep the previous one
    ├── DataError               one inbound message is bad: keep it with the reason, dead-letter,
    │   │                       go on with the next message
    │   ├── UnknownSourceError  no connector is registered under that name
    │   └── UnassignedDeviceError  the reading's device has no patient at that time (quarantine)
    │       └── UnregisteredIdentityError  lookup mode: the device/patient is not registered
    ├── RequestError            an operator's request (registry API/CLI) cannot be done as asked;
    │   ├── NotFoundError       nothing changed: answer 4xx / one line on stderr, fix the request
    │   └── ConflictError       (e.g. an assignment overlapping another of the same device)
    ├── RetriableDeliveryError  a destination failed in a way that may pass: back off and retry
    └── FatalDeliveryError      a destination refused the resource: dead-letter with its answer

Messages never carry patient identifiers, names or values: they reach logs, spans, ACKs and
OperationOutcomes. Say *where* (file:line, segment/field, JSON path) and *what kind* of problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class HubError(Exception):
    """Base class: ``message`` is user-facing; ``internal_message`` may add detail for operators."""

    code: str = "exception"  # FHIR issue-type code used when this error becomes an OperationOutcome

    def __init__(self, message: str, *, internal_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.internal_message = internal_message or message


@dataclass(frozen=True)
class ErrorLocation:
    """One problem in a config or mapping file, positioned for a human editor."""

    file: str
    line: int | None
    column: int | None
    field: str
    problem: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {field}{self.problem}"


class ConfigurationError(HubError):
    """Settings or a config file are invalid; the process cannot start as configured."""

    code = "invalid"

    def __init__(self, message: str, *, problems: list[ErrorLocation] | None = None) -> None:
        self.problems = problems or []
        if self.problems:
            message = message + "\n" + "\n".join(str(p) for p in self.problems)
        super().__init__(message)


class MappingError(ConfigurationError):
    """A mapping file is invalid. ``problems`` lists every error found, not only the first."""


class DataError(HubError):
    """One inbound message cannot be turned into resources. Keep it, record why, continue.

    ``location`` names where in the message (e.g. ``readings[3].value`` or ``OBX-5``), never the
    value found there.
    """

    code = "invalid"

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


class UnknownSourceError(DataError):
    """No connector is registered for the named source."""

    code = "not-found"


class UnassignedDeviceError(DataError):
    """The device is not assigned to a patient at the reading's time. ``waits`` is the identity
    key (type, system, value) whose registration or assignment may place the reading: the
    quarantined message waits for it (hub.store.quarantine)."""

    code = "not-found"

    def __init__(self, message: str, *, location: str | None = None,
                 waits: tuple[str, str, str] | None = None) -> None:
        super().__init__(message, location=location)
        self.waits = waits


class UnregisteredIdentityError(UnassignedDeviceError):
    """Identity mode lookup: the device or patient a reading names is not in the registry. The
    message waits in quarantine until it is registered (and assigned)."""


class RequestError(HubError):
    """An operator's request cannot be done as asked (bad input, or the registry's state
    refuses it); nothing was changed. ``status`` is the HTTP answer."""

    status: int = 400


class NotFoundError(RequestError):
    """The request names something that does not exist (an unregistered device)."""

    code = "not-found"
    status = 404


class ConflictError(RequestError):
    """The request contradicts what is recorded (an assignment overlapping another)."""

    code = "conflict"
    status = 409


class RetriableDeliveryError(HubError):
    """Delivery failed transiently (5xx, timeout, reset, 429); ``retry_after`` in seconds."""

    code = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class FatalDetail:
    """What a destination said when it refused a resource (its OperationOutcome, if any)."""

    status: int | None = None
    outcome: dict[str, object] | None = None
    extra: dict[str, object] = field(default_factory=dict)


class FatalDeliveryError(HubError):
    """The destination refused the resource for good (400/422, AE/AR): dead-letter it."""

    code = "processing"

    def __init__(self, message: str, *, detail: FatalDetail | None = None) -> None:
        super().__init__(message)
        self.detail = detail or FatalDetail()
