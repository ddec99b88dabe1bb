"""Deterministic resource ids, so a reading delivered twice becomes one resource.

The id is a UUIDv5 over a key of the reading's identity (as the HL7 PHD IG's dedup identifier
and iomt-fhir's ``{patient}.{device}.{type}.{period}`` do); the same UUID, as a ``urn:uuid:``,
is the resource's business identifier, so destinations can deduplicate on it too.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hub.contracts import Identifier

HUB_NAMESPACE = uuid.UUID("7d1c6a52-5f3e-4c8f-9a4b-1f0b8e6a2c01")  # fixed forever: ids depend on it
URI_SYSTEM = "urn:ietf:rfc:3986"


def stable_id(*parts: str) -> str:
    """A FHIR id (UUID text, 36 chars) that depends only on ``parts``."""
    return str(uuid.uuid5(HUB_NAMESPACE, "|".join(parts)))


def instant_key(when: datetime) -> str:
    """The UTC instant, so ``10:00+02:00`` and ``08:00Z`` are the same reading."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def observation_id(
    device: Identifier, patient_id: str | None, mtype: str, effective: datetime
) -> str:
    """Identity of a reading: device, patient, measurement type, effective instant."""
    return stable_id("Observation", device.token(), patient_id or "", mtype, instant_key(effective))


def registry_id(resource_type: str, identifier: Identifier) -> str:
    """Id of a Patient/Device first seen by this business identifier."""
    return stable_id(resource_type, identifier.token())


def urn_identifier(resource_id: str) -> dict[str, str]:
    """The business identifier carrying a deterministic id (``urn:uuid:<id>``)."""
    return {"system": URI_SYSTEM, "value": f"urn:uuid:{resource_id}"}
