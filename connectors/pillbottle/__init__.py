"""Smart pill bottle: the hub's own event format for medication-adherence devices.

A bottle (or its cellular hub) posts what happened, one event or a batch after being offline::

    {"bottle": {"id": "PB-0042"},
     "patient": {"id": "MRN-1234", "system": "urn:oid:..."},          # optional
     "events": [{"id": "evt-981", "type": "dose-taken", "time": "2026-11-20T08:02:11+01:00",
                 "medication": {"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                "code": "197361", "display": "amlodipine 5 MG Oral Tablet"},
                 "doses": 1}]}

``type`` is ``dose-taken`` (the bottle saw a dose removed), ``dose-missed`` (a scheduled dose was
not taken within the bottle's window; ``time`` is when it was due) or ``bottle-opened`` (opened,
no dose count known). The JSON Schema is ``mappings/schema/pillbottle-event.schema.json``,
generated from :class:`PillBottleMessage` (``write_schema()``).

**What it becomes, and why an Observation.** Each event becomes one Observation: code = the event
type in the hub's code system ``urn:iomt-fhir-hub:medication-event`` (codes ``dose-taken``,
``dose-missed``, ``bottle-opened``; catalogue ``mappings/types/medication-events.yaml``), value =
the medication as a CodeableConcept (RxNorm), component = the dose count, device = the bottle,
subject = the patient. A bottle event is a *device observation* — evidence that the bottle was
opened or a dose removed, not proof the patient swallowed it — which is what an Observation
states. ``MedicationAdministration`` or ``MedicationStatement`` assert that a medication was
taken; deciding that (against the schedule, with a grace window) is the adherence rules' job
(issue 6), which read these Observations as their input and write those resources themselves.
Keeping the events in the mapping machinery also gives them deterministic ids (a replayed batch
is stored once), lineage and golden tests like any reading. No LOINC code says "pill bottle
opened"; a private code system with a documented URN is the honest choice.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.contracts import JSON, Connector, decode_json
from hub.errors import DataError

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "mappings/schema/pillbottle-event.schema.json"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ref(_Strict):
    """An identifier: ``id`` within ``system`` (the hub's default system when omitted)."""

    id: str = Field(min_length=1, description="the identifier value")
    system: str | None = Field(None, description="identifier system URI")


class Medication(_Strict):
    """The medication the bottle holds, as a code (RxNorm recommended)."""

    system: str = Field(RXNORM, description="code system URI; RxNorm by default")
    code: str = Field(min_length=1, description="e.g. an RxNorm RXCUI such as 197361")
    display: str | None = Field(None, description="human-readable name")


class PillBottleEvent(_Strict):
    """One thing the bottle saw."""

    id: str | None = Field(None, description="the bottle's event id (deduplication)")
    type: Literal["dose-taken", "dose-missed", "bottle-opened"]
    time: datetime = Field(description="ISO 8601 with a UTC offset: when it happened (for "
                                       "dose-missed, when the dose was due)")
    medication: Medication
    doses: int | None = Field(None, ge=0, description="doses removed (dose-taken) or due "
                                                      "(dose-missed)")


class PillBottleMessage(_Strict):
    """What a smart pill bottle posts to ``/ingest/pillbottle``."""

    bottle: Ref
    patient: Ref | None = None
    events: list[PillBottleEvent] = Field(min_length=1)


def event_schema() -> dict[str, Any]:
    """The JSON Schema of the message format, as committed in ``mappings/schema``."""
    schema = PillBottleMessage.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:iomt-fhir-hub:schema:pillbottle-event", **schema}


def write_schema(path: Path = SCHEMA_FILE) -> None:
    """Regenerate the committed schema file."""
    path.write_bytes(orjson.dumps(event_schema(),
                                  option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


class PillBottleConnector(Connector):
    """Smart pill bottle events (the hub's documented format) → one Observation per event."""

    name: ClassVar[str] = "pillbottle"
    content_types: ClassVar[frozenset[str]] = frozenset({"application/json"})

    def decode(self, body: bytes, content_type: str) -> JSON:
        document: Any = decode_json(body)
        try:
            PillBottleMessage.model_validate(document)
        except ValidationError as exc:
            # Every problem at once, by place; never the values (they may identify a patient).
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '$'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False, include_context=False))
            raise DataError(f"not a pill bottle message: {problems}") from None
        return document

    def event_id(self, document: JSON) -> str | None:
        """The event id when the message holds exactly one event that has one."""
        events = document.get("events") if isinstance(document, dict) else None
        if isinstance(events, list) and len(events) == 1 and isinstance(events[0], dict):
            found = events[0].get("id")
            return str(found) if found else None
        return None
