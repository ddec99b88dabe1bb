"""iHealth: blood pressure, glucose, SpO2 and weight from the iHealth cloud (OpenAPI v2).

Payload: one answer of the iHealth user data endpoints (``bp.json``, ``glucose.json``,
``spo2.json``, ``weight.json``; lists ``BPDataList``, ``BGDataList``, ``BODataList``,
``WeightDataList``), posted in the hub's account envelope because the answer does not say whose
readings it holds::

    {"account": "<iHealth userid>", "patient": {"id": "..."}?, "response": <answer>}

A bare answer is refused at intake, as is an iHealth error answer (``ErrorCode``). Mapping:
``mappings/devices/ihealth.yaml`` (local-clock ``MDate`` + ``TimeZone``, unit codes per list).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from hub.contracts import JSON, Connector
from hub.errors import DataError

ENVELOPE_HINT = ('post it as {"account": <iHealth userid>, "response": <answer>}: an iHealth '
                 "answer does not say whose readings it holds")


class IHealthConnector(Connector):
    """iHealth cloud answers in the account envelope."""

    name: ClassVar[str] = "ihealth"
    content_types: ClassVar[frozenset[str]] = frozenset({"application/json"})

    def decode(self, body: bytes, content_type: str) -> JSON:
        try:
            document: Any = orjson.loads(body.removeprefix(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError as exc:
            raise DataError(f"body is not JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(document, dict) or "response" not in document:
            raise DataError(f"not in the account envelope; {ENVELOPE_HINT}", location="$")
        if not isinstance(document.get("account"), str | int) or document["account"] == "":
            raise DataError(f"account missing; {ENVELOPE_HINT}", location="account")
        response = document["response"]
        if not isinstance(response, dict):
            raise DataError("response is not an iHealth answer (expected an object)",
                            location="response")
        if "ErrorCode" in response:
            raise DataError("iHealth answered with an error, not data", location="response")
        return document
