"""JSON Schemas for the mapping files, generated from the pydantic models that read them.

The models in ``hub.mappings.schema`` (and ``golden``) are the one declaration of the language;
the committed ``mappings/schema/*.schema.json`` files are derived from them for editors (YAML
language servers autocomplete and check a file that starts with
``# yaml-language-server: $schema=../schema/device-mapping.schema.json``). ``hub mappings schema``
regenerates them; a test fails when a committed file differs from a fresh generation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from hub.mappings.golden import GoldenFile
from hub.mappings.schema import DeviceMapping, TypeCatalogue

DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: file name → (model, title)
SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "device-mapping.schema.json": (DeviceMapping, "Device mapping (mappings/devices/*.yaml)"),
    "type-catalogue.schema.json": (TypeCatalogue, "Measurement-type catalogue "
                                                  "(mappings/types/*.yaml)"),
    "mapping-test.schema.json": (GoldenFile, "Golden mapping test (*.test.yaml)"),
}


def schema_of(model: type[BaseModel], title: str) -> dict[str, Any]:
    """The model's JSON Schema (validation mode: what a file may contain)."""
    schema = model.model_json_schema(mode="validation")
    return {"$schema": DIALECT, "title": title, **{k: v for k, v in schema.items()
                                                     if k != "title"}}


def render(schema: dict[str, Any]) -> bytes:
    """Stable text: sorted keys, two-space indent, final newline (diffs stay reviewable)."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def generated() -> dict[str, bytes]:
    """File name → freshly generated content."""
    return {name: render(schema_of(model, title)) for name, (model, title) in SCHEMAS.items()}


def write(folder: Path) -> list[Path]:
    """(Re)write every schema under ``folder``; returns the files that changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, content in generated().items():
        path = folder / name
        if not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)
            changed.append(path)
    return changed


def stale(folder: Path) -> list[str]:
    """Names of committed schema files that are missing or differ from a fresh generation."""
    return [name for name, content in generated().items()
            if not (folder / name).is_file() or (folder / name).read_bytes() != content]
