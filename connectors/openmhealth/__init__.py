"""Open mHealth: data points (and their bodies) of the OMH vital-sign schemas, incl. HealthKit.

Payload: an Open mHealth data point (``{"header": {...}, "body": {...}}``), an array of them, or a
bare schema body (``{"heart_rate": {...}, "effective_time_frame": {...}}``) — including Granola's
HealthKit quantity samples — posted in the hub's account envelope, because OMH data points carry
no user (the header names the source app, not the person)::

    {"account": "<account at the sending app>", "patient": {"id": "..."}?, "response": <data>}

A bare payload is refused at intake. Mapping: ``mappings/devices/openmhealth.yaml`` (the schema
is recognised by the body's property, as OMH bodies do not name their schema).
"""

from __future__ import annotations

from typing import Any, ClassVar

from hub.contracts import EnvelopeConnector
from hub.errors import DataError

ENVELOPE_HINT = ('post it as {"account": <account id>, "response": <data point(s)>}: an Open '
                 "mHealth data point does not say whose reading it is")


class OpenMHealthConnector(EnvelopeConnector):
    """Open mHealth data points in the account envelope."""

    name: ClassVar[str] = "openmhealth"
    envelope_hint: ClassVar[str] = ENVELOPE_HINT

    def check_answer(self, response: Any) -> None:
        if not isinstance(response, dict | list) or not response:
            raise DataError("response is not an Open mHealth data point, array or body",
                            location="response")
