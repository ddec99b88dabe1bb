"""Bundles the hub emits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hub.fhir.ids import stable_id


def collection_bundle(resources: Iterable[dict[str, Any]], *, key: str) -> dict[str, Any]:
    """A ``collection`` Bundle (what ``hub convert`` prints); ``key`` makes its id stable."""
    entries = [
        {"fullUrl": f"urn:uuid:{r['id']}" if _is_uuid(r["id"])
         else f"{r['resourceType']}/{r['id']}", "resource": r}
        for r in resources
    ]
    return {
        "resourceType": "Bundle",
        "id": stable_id("Bundle", key),
        "type": "collection",
        "entry": entries,
    }


def _is_uuid(value: str) -> bool:
    return len(value) == 36 and value.count("-") == 4
