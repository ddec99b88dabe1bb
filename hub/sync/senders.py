"""Building a sender per destination: the one place that knows every destination type."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from hub.store.delivery import Claimed
from hub.sync.config import (
    AnyDestination,
    DestinationsFile,
    HealthLakeDestination,
    Hl7v2AckDestination,
    Hl7v2Destination,
    Limits,
)
from hub.sync.fhir_rest import FhirRestSender
from hub.sync.healthlake import HealthLakeSender, tier_limits
from hub.sync.hl7ack import Hl7v2AckSender
from hub.sync.hl7out import Hl7v2Sender
from hub.sync.policy import Attempt, CircuitBreaker, Pacer
from hub.sync.routing import OutboxRouter


class Sender(Protocol):
    """Delivers claimed rows to one destination; shared by that destination's lanes."""

    name: str
    kind: str
    limits: Limits
    pacer: Pacer
    breaker: CircuitBreaker

    def deliver(self, items: list[Claimed], stop: threading.Event | None = None
                ) -> dict[int, Attempt]: ...

    def check(self) -> str: ...

    def preview(self, items: list[Claimed]) -> dict[str, Any]: ...

    def close(self) -> None: ...


def effective_limits(dest: AnyDestination) -> Limits:
    if isinstance(dest, HealthLakeDestination):
        return tier_limits(dest)
    if dest.limits.bundle_size is None:
        size = 1 if isinstance(dest, Hl7v2Destination | Hl7v2AckDestination) else 100
        return dest.limits.model_copy(update={"bundle_size": size})
    return dest.limits


def build_sender(config: DestinationsFile, name: str, engine: Engine | None = None,
                 **kwargs: Any) -> Sender:
    """The sender for destination ``name``; ``engine`` is for those that read the store (HL7v2
    ACKs rebuild each ACK from the inbox); ``kwargs`` (http, auth) are for tests."""
    dest = config.get(name)
    if isinstance(dest, Hl7v2AckDestination):
        return Hl7v2AckSender(dest, effective_limits(dest), engine=engine)
    route = OutboxRouter.from_config(config).get(name)
    if isinstance(dest, HealthLakeDestination):
        return HealthLakeSender(dest, route=route, **kwargs)
    if isinstance(dest, Hl7v2Destination):
        return Hl7v2Sender(dest, effective_limits(dest), route=route)
    return FhirRestSender(dest, effective_limits(dest), route=route, **kwargs)
