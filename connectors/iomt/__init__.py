"""iomt-fhir-style device messages: Azure IoT Hub / IoT Central telemetry and MedTech JSON.

Payloads that Azure's IoMT FHIR Connector (microsoft/iomt-fhir, now the MedTech service) reads,
so a site moving off it can point the same devices at the hub:

- IoT Hub event envelopes ``{"Body": {...} | [...], "Properties": {...}, "SystemProperties":
  {"iothub-connection-device-id": ...}}`` (``Properties.iothub-creation-time-utc`` dates them);
- IoT Central telemetry exports ``{"deviceId", "enqueuedTime", "telemetry": {...}}``, alone or a
  batch under ``Body``;
- the MedTech mapping generator's device data ``{"type", "time", "device", "patient",
  "values"}`` and flat projections.

They name their device (and sometimes the patient), so no envelope is needed. Some exports start
with a UTF-8 byte-order mark; it is ignored. Mapping: ``mappings/devices/iomt.yaml``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hub.contracts import JSON, Connector, decode_json
from hub.errors import DataError


class IomtConnector(Connector):
    """Device JSON in the shapes iomt-fhir / the MedTech service accept."""

    name: ClassVar[str] = "iomt"
    content_types: ClassVar[frozenset[str]] = frozenset({"application/json"})

    def decode(self, body: bytes, content_type: str) -> JSON:
        document: Any = decode_json(body)
        if not isinstance(document, dict):
            raise DataError("expected a JSON object (an IoT Hub event, IoT Central telemetry or "
                            "a device message)", location="$")
        return document

    def event_id(self, document: JSON) -> str | None:
        """IoT Hub's message id when the envelope carries one (a redelivery repeats it)."""
        system = document.get("SystemProperties") if isinstance(document, dict) else None
        found = system.get("message-id") if isinstance(system, dict) else None
        return str(found) if found else None
