"""FHIR R4 resources and Bundles sent to the hub's FHIR API (source ``fhir``, channel ``fhir``).

Accepts one resource of a type the hub serves (Observation, Patient, Device, Flag,
Communication) or a Bundle of type ``batch``/``transaction`` whose entries POST or PUT them.

``decode`` validates with fhir.resources.R4B (plus the required-binding status codes it does not
check) and returns a *plan*, plain JSON that the API also reads to answer per entry::

    {"kind": "resource" | "batch" | "transaction",
     "entries": [{"method": "POST" | "PUT", "type": str | None, "id": str | None,
                  "resource": {...} | None,
                  "error": None | {"message": str, "location": str | None, "code": str}}]}

A single resource or a transaction with any invalid entry raises ``DataError`` (nothing is
stored); a batch keeps per-entry errors and its other entries go on. Locations look like
``Observation.status`` or ``entry[2].resource.status`` and never quote a value.

Ids are decided here, deterministically, so reprocessing a message or repeating a request
rewrites the same resources:

* PUT (entry ``request.url`` ``Type/id``, or content-type parameter ``hub-update=<id>`` set by
  the API for ``PUT /fhir/Type/id``): that id; the body's ``id`` must equal it (R4 rule).
* create with ``ifNoneExist: identifier=system|value`` (or content-type parameter ``hub-id=<id>``,
  which the API derives the same way from an ``If-None-Exist`` header):
  ``hub.fhir.capability.identifier_id`` of that identifier.
* other creates: ``identifier_id`` of the resource's first identifier with system and value —
  so creating the same business resource twice is one resource; without one, a UUIDv5 over the
  body's SHA-256 (the inbox's own dedupe key for the message) and the entry's index.

In a transaction, references to another entry's ``fullUrl`` are rewritten to ``Type/id``.
Content-type parameters come only from the hub's API (its intake strips client parameters).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from hub.contracts import JSON, Connector, Extraction, MeasurementExtractor, decode_json
from hub.errors import DataError
from hub.fhir.capability import (
    RESOURCE_TYPES,
    STATUS_CODES,
    identifier_criteria,
    identifier_id,
)
from hub.fhir.ids import stable_id

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
# pydantic error types whose standard message names no input value (safe to show).
_SAFE_MESSAGES = {
    "missing": "required element missing",
    "extra_forbidden": "unknown element",
    "string_pattern_mismatch": "does not match the required pattern",
    "string_too_short": "must not be empty",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "decimal_type": "must be a number",
    "list_type": "must be an array",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}


def is_fhir_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and set(value) <= ID_CHARS


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: Any) -> str:
    kind = str(error.get("type", ""))
    if kind.endswith(".missing"):
        kind = "missing"
    return _SAFE_MESSAGES.get(kind, "invalid value")


class EntryError(Exception):
    """One entry (or the single resource) is unusable; ``code`` is the FHIR issue type."""

    def __init__(self, message: str, location: str | None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message, self.location, self.code = message, location, code


def validate(resource: Any, where: str) -> str:
    """Check one resource, return its type; ``where`` prefixes locations (``entry[2].resource``)."""
    if not isinstance(resource, dict):
        raise EntryError("expected a FHIR resource (JSON object)", where or "$")
    rtype = resource.get("resourceType")
    prefix = f"{where}." if where else f"{rtype}."
    if rtype not in RESOURCE_TYPES:
        raise EntryError(f"resource type not supported (supported: {', '.join(RESOURCE_TYPES)})",
                         f"{where}.resourceType" if where else "resourceType", "not-supported")
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        problems = exc.errors()
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise EntryError(_describe(first) + more, prefix + _path(tuple(first["loc"]))) from None
    allowed = STATUS_CODES.get(rtype)
    if allowed is not None and "status" in resource and resource["status"] not in allowed:
        raise EntryError(f"status must be one of: {', '.join(sorted(allowed))}",
                         prefix + "status", "code-invalid")
    return str(rtype)


def with_id(resource: dict[str, Any], rid: str) -> dict[str, Any]:
    """The resource with ``id`` set, placed right after ``resourceType`` as FHIR JSON shows it."""
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id")}
    return {"resourceType": resource["resourceType"], "id": rid, **rest}


def create_id(rtype: str, resource: dict[str, Any], digest: str, index: int) -> str:
    """The id a create assigns: from the first full identifier, else from the body and index."""
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            return identifier_id(rtype, str(ident["system"]), str(ident["value"]))
    return stable_id(rtype, f"sha256:{digest}", str(index))


def content_params(content_type: str) -> dict[str, str]:
    params = {}
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        params[key.lower()] = value.strip()
    return params


def _rewrite(node: Any, refs: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in refs:
                node[key] = refs[value]
            else:
                _rewrite(value, refs)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, refs)


def _entry(raw: Any, index: int, digest: str) -> dict[str, Any]:
    where = f"entry[{index}]"
    criteria: list[str] | None = None  # a conditional create's identifier (system, value)
    if not isinstance(raw, dict):
        raise EntryError("expected an object", where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise EntryError("request (method, url) is required", f"{where}.request")
    method, url = request.get("method"), request.get("url")
    if method not in ("POST", "PUT"):
        raise EntryError("only POST and PUT entries are supported", f"{where}.request.method",
                         "not-supported")
    if not isinstance(url, str) or not url:
        raise EntryError("request.url is required", f"{where}.request.url")
    resource: dict[str, Any] = raw.get("resource")  # type: ignore[assignment]
    rtype = validate(resource, f"{where}.resource")  # (a dict once this returns)
    if method == "PUT":
        parts = url.split("?", 1)[0].rstrip("/").split("/")
        if "?" in url or len(parts) < 2 or parts[-2] != rtype or not is_fhir_id(parts[-1]):
            raise EntryError("PUT url must be Type/id for the entry's resource type",
                             f"{where}.request.url")
        rid = parts[-1]
        if resource.get("id") != rid:
            raise EntryError("resource id must equal the id in request.url",
                             f"{where}.resource.id")
    else:
        if url.split("?", 1)[0].rstrip("/").split("/")[-1] != rtype or "?" in url:
            raise EntryError("POST url must be the entry's resource type", f"{where}.request.url")
        condition = request.get("ifNoneExist")
        if condition is not None:
            found = identifier_criteria(str(condition))
            if found is None:
                raise EntryError("conditional create supports only identifier=system|value",
                                 f"{where}.request.ifNoneExist", "not-supported")
            rid, criteria = identifier_id(rtype, *found), list(found)
        else:
            rid = create_id(rtype, resource, digest, index)
        resource = with_id(resource, rid)
    entry = {"method": method, "type": rtype, "id": rid, "resource": resource, "error": None,
             "fullUrl": raw.get("fullUrl")}
    if criteria is not None:
        entry["if_none_exist"] = criteria
    return entry


class FhirResourceConnector(Connector):
    """R4 resources and batch/transaction Bundles; see the module docstring for the plan."""

    name: ClassVar[str] = "fhir"
    content_types: ClassVar[frozenset[str]] = frozenset({"application/fhir+json",
                                                         "application/json"})

    def decode(self, body: bytes, content_type: str) -> JSON:
        document: Any = decode_json(body)
        digest = hashlib.sha256(body).hexdigest()
        try:
            if isinstance(document, dict) and document.get("resourceType") == "Bundle":
                return self._bundle(document, digest)
            return self._single(document, digest, content_params(content_type))
        except EntryError as exc:
            raise DataError(exc.message, location=exc.location) from None

    def _single(self, resource: Any, digest: str, params: dict[str, str]) -> JSON:
        rtype = validate(resource, "")
        update, given = params.get("hub-update"), params.get("hub-id")
        if update is not None:
            if not is_fhir_id(update) or resource.get("id") != update:
                raise EntryError("resource id must equal the id in the request URL",
                                 f"{rtype}.id")
            rid, method = update, "PUT"
        elif given is not None and is_fhir_id(given):
            rid, method = given, "POST"
        else:
            rid, method = create_id(rtype, resource, digest, 0), "POST"
        resource = with_id(resource, rid)
        entry = {"method": method, "type": rtype, "id": rid, "resource": resource, "error": None}
        if given is not None and update is None:  # If-None-Exist: the API checked its match;
            entry["if_none_exist"] = None  # the pipeline checks again under the write lock
        return {"kind": "resource", "entries": [entry]}

    def _bundle(self, bundle: dict[str, Any], digest: str) -> JSON:
        kind = bundle.get("type")
        if kind not in ("batch", "transaction"):
            raise EntryError("Bundle.type must be batch or transaction", "Bundle.type",
                             "not-supported")
        raw_entries = bundle.get("entry", [])
        if not isinstance(raw_entries, list):
            raise EntryError("Bundle.entry must be an array", "Bundle.entry")
        entries: list[dict[str, Any]] = []
        targets: set[tuple[str, str]] = set()
        for index, raw in enumerate(raw_entries):
            try:
                entry = _entry(raw, index, digest)
                if (entry["type"], entry["id"]) in targets:
                    raise EntryError("another entry already writes this resource",
                                     f"entry[{index}].request")
                targets.add((entry["type"], entry["id"]))
            except EntryError as exc:
                if kind == "transaction":
                    raise  # all or nothing: the whole Bundle is refused
                entry = {"method": None, "type": None, "id": None, "resource": None,
                         "error": {"message": exc.message, "location": exc.location,
                                   "code": exc.code}}
            entries.append(entry)
        if kind == "transaction":
            refs = {e["fullUrl"]: f"{e['type']}/{e['id']}" for e in entries if e.get("fullUrl")}
            for e in entries:
                _rewrite(e["resource"], refs)
        for e in entries:
            e.pop("fullUrl", None)
        return {"kind": kind, "entries": entries}

    def extract(self, document: JSON, mappings: MeasurementExtractor) -> Extraction:
        """The planned resources (no device mapping); a batch's bad entries as errors.

        A *created* Patient or Device goes to ``patients``/``devices``, whose identifiers the
        pipeline binds in the identity registry (a create naming a known identifier resolves to
        that resource). A PUT goes to ``resources`` as is: its id is the client's, never renamed.
        """
        out = Extraction()
        for entry in document["entries"]:
            error = entry["error"]
            if "if_none_exist" in entry and error is None:
                criteria = entry["if_none_exist"]
                out.create_only[(entry["type"], entry["id"])] = \
                    (criteria[0], criteria[1]) if criteria else None
            if error is not None:
                out.errors.append(DataError(error["message"], location=error["location"]))
            elif entry["method"] == "POST" and entry["type"] == "Patient":
                out.patients.append(entry["resource"])
            elif entry["method"] == "POST" and entry["type"] == "Device":
                out.devices.append(entry["resource"])
            else:
                out.resources.append(entry["resource"])
        return out
