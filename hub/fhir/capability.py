"""What the hub's FHIR R4 REST API supports, declared once.

The search parser (``hub.api.fhir_read``), the query builder (``hub.store.search``), the write
connector (``connectors.fhir_resource``) and ``GET /fhir/metadata`` all read the tables below, so
the CapabilityStatement lists exactly what the server does — nothing it ignores, nothing it lacks.

Also here, because it is part of the server's declared create semantics and both the API and the
``fhir`` connector need it: ``identifier_id``, the id a created resource gets from its business
identifier (this is what makes create and conditional create on an identifier idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from hub.fhir.ids import URI_SYSTEM, stable_id

FHIR_VERSION = "4.0.1"
RESOURCE_TYPES: tuple[str, ...] = ("Observation", "Patient", "Device", "Flag", "Communication",
                                   "DiagnosticReport")

# How a parameter is evaluated; hub.store.search maps each kind to indexed columns.
Kind = Literal[
    "id", "last_updated", "subject", "patient", "code", "category", "status", "effective",
    "identifier",
]
ParamType = Literal["token", "reference", "date"]


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter of one resource type."""

    name: str
    type: ParamType
    kind: Kind
    documentation: str
    definition: str | None = None  # canonical SearchParameter URL when it is a standard one


_SP = "http://hl7.org/fhir/SearchParameter/"

_ID = SearchParam("_id", "token", "id", "Logical id (one or several, comma-separated).",
                  _SP + "Resource-id")
_UPDATED = SearchParam(
    "_lastUpdated", "date", "last_updated",
    "When the hub last changed the resource; prefixes eq ne lt le gt ge sa eb.",
    _SP + "Resource-lastUpdated")


def _subject(targets: str, definition: str) -> SearchParam:
    return SearchParam("subject", "reference", "subject",
                       f"Type/id, or a bare id meaning any of: {targets}.", definition)


def _patient(definition: str) -> SearchParam:
    return SearchParam("patient", "reference", "patient", "Patient/id or a bare Patient id.",
                       definition)


_DATE_DOC = ("Prefixes eq ne lt le gt ge sa eb; a partial date (2026, 2026-11, 2026-11-20) means "
             "that whole period; a value without an offset is read in the hub's default zone.")



def _clinical(res_type: str, category_system: str) -> tuple[SearchParam, ...]:
    """The parameters Observation and DiagnosticReport share (clinical results by patient,
    code, effective time and category)."""
    return (
        _ID, _UPDATED,
        _patient(_SP + "clinical-patient"),
        _subject("Patient, Group, Device, Location", _SP + f"{res_type}-subject"),
        SearchParam("code", "token", "code",
                    "code, system|code or |code (no system); matches any coding of "
                    f"{res_type}.code.", _SP + "clinical-code"),
        SearchParam("date", "date", "effective",
                    f"{res_type}.effective[x] (a period by its start). " + _DATE_DOC,
                    _SP + "clinical-date"),
        SearchParam("category", "token", "category",
                    "code or system|code of the first category's first coding (the system, if "
                    f"given, must be {category_system}).", _SP + f"{res_type}-category"),
    )


SEARCH_PARAMS: dict[str, tuple[SearchParam, ...]] = {
    "Observation": _clinical("Observation", "the standard observation-category system"),
    "Patient": (
        _ID, _UPDATED,
        SearchParam("identifier", "token", "identifier", "system|value, |value or value.",
                    _SP + "Patient-identifier"),
    ),
    "Device": (
        _ID, _UPDATED,
        SearchParam("identifier", "token", "identifier", "system|value, |value or value.",
                    _SP + "Device-identifier"),
    ),
    "Flag": (
        _ID, _UPDATED,
        _patient(_SP + "clinical-patient"),
        _subject("Patient, Location, Group, Organization, Practitioner, PlanDefinition, "
                 "Medication, Procedure", _SP + "Flag-subject"),
        SearchParam("status", "token", "status", "active | inactive | entered-in-error "
                    "(hub-defined parameter)."),
        SearchParam("category", "token", "category",
                    "code or system|code of the first category's first coding (hub-defined "
                    "parameter; the system, if given, must be the flag-category system)."),
        SearchParam("date", "date", "effective", "Flag.period (by its start). " + _DATE_DOC,
                    _SP + "clinical-date"),
    ),
    "Communication": (
        _ID, _UPDATED,
        _patient(_SP + "Communication-patient"),
        _subject("Patient, Group", _SP + "Communication-subject"),
        SearchParam("status", "token", "status", "Communication.status.",
                    _SP + "Communication-status"),
        SearchParam("category", "token", "category",
                    "code or system|code of the first category's first coding (the system, if "
                    "given, must be the communication-category system).",
                    _SP + "Communication-category"),
        SearchParam("sent", "date", "effective", "Communication.sent. " + _DATE_DOC,
                    _SP + "Communication-sent"),
    ),
    "DiagnosticReport": (
        *_clinical("DiagnosticReport", "HL7 table 0074, the diagnostic service section"),
        SearchParam("status", "token", "status", "DiagnosticReport.status.",
                    _SP + "DiagnosticReport-status"),
    ),
}

# The category column keeps only the code; a system in a search must be the standard one.
CATEGORY_SYSTEMS: dict[str, str] = {
    "Observation": "http://terminology.hl7.org/CodeSystem/observation-category",
    "Flag": "http://terminology.hl7.org/CodeSystem/flag-category",
    "Communication": "http://terminology.hl7.org/CodeSystem/communication-category",
    "DiagnosticReport": "http://terminology.hl7.org/CodeSystem/v2-0074",
}

# Subject reference targets, for a bare id given to ``subject``.
SUBJECT_TARGETS: dict[str, tuple[str, ...]] = {
    "Observation": ("Patient", "Group", "Device", "Location"),
    "Flag": ("Patient", "Location", "Group", "Organization", "Practitioner", "PlanDefinition",
             "Medication", "Procedure"),
    "Communication": ("Patient", "Group"),
    "DiagnosticReport": ("Patient", "Group", "Device", "Location"),
}

# _sort keys per type → kind of the sorted column ("id" sorts by the logical id).
SORTS: dict[str, dict[str, Kind]] = {
    "Observation": {"date": "effective", "_lastUpdated": "last_updated", "_id": "id"},
    "Patient": {"_lastUpdated": "last_updated", "_id": "id"},
    "Device": {"_lastUpdated": "last_updated", "_id": "id"},
    "Flag": {"date": "effective", "_lastUpdated": "last_updated", "_id": "id"},
    "Communication": {"sent": "effective", "_lastUpdated": "last_updated", "_id": "id"},
    "DiagnosticReport": {"date": "effective", "_lastUpdated": "last_updated", "_id": "id"},
}

# Required-binding status codes (R4): fhir.resources types them as plain codes, so the hub
# checks them itself; an R4 server would refuse anything else.
STATUS_CODES: dict[str, frozenset[str]] = {
    "Observation": frozenset({"registered", "preliminary", "final", "amended", "corrected",
                              "cancelled", "entered-in-error", "unknown"}),
    "Flag": frozenset({"active", "inactive", "entered-in-error"}),
    "Communication": frozenset({"preparation", "in-progress", "not-done", "on-hold", "stopped",
                                "completed", "entered-in-error", "unknown"}),
    "Device": frozenset({"active", "inactive", "entered-in-error", "unknown"}),
    "DiagnosticReport": frozenset({"registered", "partial", "preliminary", "final", "amended",
                                   "corrected", "appended", "cancelled", "entered-in-error",
                                   "unknown"}),
}

DEFAULT_COUNT = 50
MAX_COUNT = 1000


def search_param(res_type: str, name: str) -> SearchParam | None:
    for param in SEARCH_PARAMS.get(res_type, ()):
        if param.name == name:
            return param
    return None


def identifier_id(res_type: str, system: str, value: str) -> str:
    """The id a resource created with this business identifier gets (create is idempotent).

    ``urn:ietf:rfc:3986|urn:uuid:<uuid>`` — the identifier the hub gives every resource it
    makes (``hub.fhir.ids.urn_identifier``) — maps back to that uuid, so a hub receiving another
    hub's resources keeps their ids whether they arrive by PUT, create or conditional create.
    Any other identifier maps to a UUIDv5 over type and ``system|value`` (for Patient and Device
    this equals ``hub.fhir.ids.registry_id``, the id the identity registry assigns).
    """
    if system == URI_SYSTEM and value.startswith("urn:uuid:"):
        candidate = value[len("urn:uuid:"):].lower()
        if len(candidate) == 36 and all(c in "0123456789abcdef-" for c in candidate):
            return candidate
    return stable_id(res_type, f"{system}|{value}")


def identifier_criteria(criteria: str) -> tuple[str, str] | None:
    """``identifier=system|value`` (the one If-None-Exist form supported) → (system, value)."""
    name, _, token = criteria.strip().partition("=")
    system, bar, value = token.partition("|")
    if name != "identifier" or not bar or not system or not value or "&" in token:
        return None
    return system, value


def capability_statement(
    base_url: str, software_version: str, *, date: datetime | None = None
) -> dict[str, Any]:
    """The CapabilityStatement served at ``GET /fhir/metadata`` (R4, JSON only)."""
    resources = []
    for res_type in RESOURCE_TYPES:
        sorts = ", ".join(f"{k} / -{k}" for k in SORTS[res_type])
        params = []
        for p in SEARCH_PARAMS[res_type]:
            entry: dict[str, Any] = {"name": p.name, "type": p.type,
                                     "documentation": p.documentation}
            if p.definition:
                entry["definition"] = p.definition
            params.append(entry)
        resources.append({
            "type": res_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
            "documentation": (
                f"_sort: {sorts}. _count: default {DEFAULT_COUNT}, at most {MAX_COUNT}. Unknown "
                "search parameters are refused (400) unless Prefer: handling=lenient. Create "
                "assigns a deterministic id: from the first identifier (system|value), else from "
                "the request body; repeating a create changes nothing."),
            "interaction": [{"code": c} for c in ("read", "search-type", "create", "update")],
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "searchParam": params,
        })
    when = (date or datetime.now(UTC)).astimezone(UTC)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": "instance",
        "software": {"name": "iomt-fhir-hub", "version": software_version},
        "implementation": {"description": "IoMT → FHIR integration hub", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": (
                "Writes are stored durably in the hub's inbox before they are answered and "
                "processed by the same pipeline as every inbound message. Conditional create "
                "supports If-None-Exist: identifier=system|value only."),
            "security": {"description": "An API key is required on every request: "
                                        "Authorization: Bearer <key> or X-API-Key."},
            "resource": resources,
            "interaction": [{"code": "batch"}, {"code": "transaction"}],
        }],
    }
