"""Withings: body measures from the Withings Public API (``Measure - Getmeas``).

Payload: the JSON answer of ``POST https://wbsapi.withings.net/measure?action=getmeas``
(``{"status": 0, "body": {"measuregrps": [...], "timezone": ...}}``), posted in the hub's
*account envelope*, because the answer itself never says whose measures they are (Withings
answers for the account whose token made the call)::

    {"account": "<Withings userid>", "patient": {"id": "..."}?, "response": <getmeas answer>}

The poller (or webhook relay) that fetched the answer knows the account and wraps it. A bare
answer is refused at intake rather than guessed at: filing it under a shared "unknown account"
device would put every such reading on whichever patient that device is assigned to.

Mapping: ``mappings/devices/withings.yaml`` (meastype codes, ``value * 10^unit``, a blood
pressure panel from meastypes 10 + 9 of one measure group; sources cited there).
"""

from __future__ import annotations

from typing import Any, ClassVar

from hub.contracts import JSON, EnvelopeConnector
from hub.errors import DataError

ENVELOPE_HINT = ('post it as {"account": <Withings userid>, "response": <getmeas answer>}: '
                 "a Withings answer does not say whose measures it holds")


class WithingsConnector(EnvelopeConnector):
    """Withings ``getmeas`` answers in the account envelope; one Observation per measure (a blood
    pressure panel per measure group holding systolic and diastolic)."""

    name: ClassVar[str] = "withings"
    envelope_hint: ClassVar[str] = ENVELOPE_HINT

    def check_answer(self, response: Any) -> None:
        if not isinstance(response, dict) or "status" not in response:
            raise DataError("response is not a Withings API answer (no status)",
                            location="response")
        if response["status"] != 0:
            # Withings reports errors in-band with HTTP 200 and a non-zero status.
            raise DataError("Withings answered with an error status, not data",
                            location="response.status")

    def event_id(self, document: JSON) -> str | None:
        """None: a getmeas answer has no id of its own (each measure group has a ``grpid``,
        which the mapping keeps as the reading's correlation id)."""
        return None
