"""Fitbit: intraday heart rate and steps, and weight logs, from the Fitbit Web API.

Payload: one Fitbit Web API answer — ``/1/user/-/activities/heart/date/<d>/1d/1min.json``,
``/1/user/-/activities/steps/date/<d>/1d/1min.json`` or ``/1/user/-/body/log/weight/...`` —
posted in the hub's account envelope, because the answer names neither the account nor its time
zone (Fitbit writes local times on the clock of the user's profile)::

    {"account": "<Fitbit user id>", "time_zone": "<profile timeZone>"?,
     "patient": {"id": "..."}?, "response": <answer>}

Without ``time_zone`` the hub's default zone applies. The poller must call without an
``Accept-Language`` header (Fitbit then answers in metric units: kg). A bare answer is refused at
intake. Mapping: ``mappings/devices/fitbit.yaml``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hub.contracts import EnvelopeConnector
from hub.errors import DataError

ENVELOPE_HINT = ('post it as {"account": <Fitbit user id>, "time_zone": <profile timeZone>, '
                 '"response": <answer>}: a Fitbit answer does not say whose readings it holds')


class FitbitConnector(EnvelopeConnector):
    """Fitbit Web API answers in the account envelope."""

    name: ClassVar[str] = "fitbit"
    envelope_hint: ClassVar[str] = ENVELOPE_HINT

    def check_answer(self, response: Any) -> None:
        if not isinstance(response, dict):
            raise DataError("response is not a Fitbit answer (expected an object)",
                            location="response")
        if response.get("success") is False or "errors" in response:
            raise DataError("Fitbit answered with an error, not data", location="response")
