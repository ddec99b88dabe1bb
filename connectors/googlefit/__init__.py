"""Google Fit: heart rate, weight, height and step deltas from the Fitness REST API.

Payload: one dataset answer of ``users/me/dataSources/<id>/datasets/<start>-<end>``
(``{"dataSourceId": ..., "point": [...]}``), posted in the hub's account envelope because the
answer does not say whose data it holds::

    {"account": "<Google account id>", "patient": {"id": "..."}?, "response": <dataset>}

A bare dataset is refused at intake. Mapping: ``mappings/devices/googlefit.yaml``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hub.contracts import EnvelopeConnector
from hub.errors import DataError

ENVELOPE_HINT = ('post it as {"account": <Google account id>, "response": <dataset>}: a Google '
                 "Fit dataset does not say whose data it holds")


class GoogleFitConnector(EnvelopeConnector):
    """Google Fit dataset answers in the account envelope."""

    name: ClassVar[str] = "googlefit"
    envelope_hint: ClassVar[str] = ENVELOPE_HINT

    def check_answer(self, response: Any) -> None:
        if not isinstance(response, dict) or "dataSourceId" not in response:
            raise DataError("response is not a Google Fit dataset (no dataSourceId)",
                            location="response")
