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

from hub.contracts import EnvelopeConnector
from hub.errors import DataError

ENVELOPE_HINT = ('post it as {"account": <iHealth userid>, "response": <answer>}: an iHealth '
                 "answer does not say whose readings it holds")


class IHealthConnector(EnvelopeConnector):
    """iHealth cloud answers in the account envelope."""

    name: ClassVar[str] = "ihealth"
    envelope_hint: ClassVar[str] = ENVELOPE_HINT

    def check_answer(self, response: Any) -> None:
        if not isinstance(response, dict):
            raise DataError("response is not an iHealth answer (expected an object)",
                            location="response")
        if "ErrorCode" in response:
            raise DataError("iHealth answered with an error, not data", location="response")
