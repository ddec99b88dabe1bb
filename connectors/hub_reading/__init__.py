"""The hub's canonical reading format (source ``hub``), mapped by ``mappings/devices/hub.yaml``."""

from __future__ import annotations

from typing import Any, ClassVar

from hub.contracts import JSON, Connector, decode_json
from hub.errors import DataError


class HubReadingConnector(Connector):
    """Canonical JSON readings: ``{"device": {...}, "patient": {...}?, "readings": [...]}``.

    Its JSON Schema is ``mappings/schema/hub-reading.schema.json``. ``decode`` checks the envelope
    cheaply on the ingest path; per-reading problems are found by the mapping in the worker.
    """

    name: ClassVar[str] = "hub"
    content_types: ClassVar[frozenset[str]] = frozenset({"application/json"})

    def decode(self, body: bytes, content_type: str) -> JSON:
        document: Any = decode_json(body)
        if not isinstance(document, dict):
            raise DataError("expected a JSON object", location="$")
        device = document.get("device")
        if not isinstance(device, dict) or not isinstance(device.get("id"), str):
            raise DataError("device.id (string) is required", location="device.id")
        readings = document.get("readings")
        if not isinstance(readings, list) or not readings:
            raise DataError("readings must be a non-empty array", location="readings")
        return document
