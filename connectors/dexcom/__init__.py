"""Dexcom: CGM readings (estimated glucose values) from Dexcom Share and the Dexcom API v3.

Two shapes arrive under one source:

- **API v3** ``GET /v3/users/self/egvs`` answers (``{"recordType": "egv", "recordVersion": "3.0",
  "userId": ..., "records": [...]}``) are posted as they are: they name their account.
- **Share** ``ReadPublisherLatestGlucoseValues`` answers (a bare array of ``{"WT": "Date(ms)",
  "DT": "Date(ms-0400)", "Value": 224, "Trend": "Flat"}``) do not say whose readings they are,
  so the poller posts them in the hub's account envelope::

      {"account": "<Share account id>", "patient": {"id": "..."}?, "response": [...]}

- **Clarity CSV exports**, read by ``hub import dexcom --layout clarity`` (the mapping's
  ``files:``), arrive as ``{"user": <v3 userId>, "patient": {"id": ...}?, "time_zone": ...?,
  "clarity": [{"time": ..., "value": "112" | "Low" | "High"}, ...]}``.

Refused at intake: a bare Share array (whose?), a Share error answer (``{"Code":
"SessionIdNotFound", ...}``: the poller must log in again) and v3 record types other than
``egv``. Mapping: ``mappings/devices/dexcom.yaml``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hub.contracts import JSON, Connector, decode_json
from hub.errors import DataError

ENVELOPE_HINT = ('post it as {"account": <Share account id>, "response": <answer>}: a Dexcom '
                 "Share answer does not say whose readings it holds")


class DexcomConnector(Connector):
    """Dexcom Share answers (in the account envelope) and API v3 ``egvs`` answers."""

    name: ClassVar[str] = "dexcom"
    content_types: ClassVar[frozenset[str]] = frozenset({"application/json"})

    def decode(self, body: bytes, content_type: str) -> JSON:
        document: Any = decode_json(body)
        if isinstance(document, dict) and "recordType" in document:
            if document["recordType"] != "egv":
                raise DataError("Dexcom v3 records other than egv (estimated glucose values) "
                                "are not mapped", location="recordType")
            if not isinstance(document.get("records"), list):
                raise DataError("Dexcom v3 answer without a records array", location="records")
            return document
        if isinstance(document, dict) and "clarity" in document:
            if not isinstance(document.get("user"), str) or not document["user"]:
                raise DataError("user missing: whose Clarity export is it? (hub import dexcom "
                                "--layout clarity --set user=<Dexcom userId>)", location="user")
            if not isinstance(document["clarity"], list):
                raise DataError("clarity is not a list of rows", location="clarity")
            return document
        if not isinstance(document, dict) or "response" not in document:
            raise DataError(f"not a Dexcom v3 answer nor in the account envelope; {ENVELOPE_HINT}",
                            location="$")
        if not isinstance(document.get("account"), str) or not document["account"]:
            raise DataError(f"account missing; {ENVELOPE_HINT}", location="account")
        response = document["response"]
        if isinstance(response, dict) and "Code" in response:
            # Share reports failures as a fault object; the code names the kind, never data.
            raise DataError(f"Dexcom Share answered with an error ({response['Code']}), not "
                            "readings", location="response.Code")
        if not isinstance(response, list):
            raise DataError("response is not a Dexcom Share glucose list", location="response")
        return document

    def event_id(self, document: JSON) -> str | None:
        """None: each v3 record has its own ``recordId`` (kept as the correlation id); a message
        has no id of its own."""
        return None
