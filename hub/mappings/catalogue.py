"""Load every mapping file under a directory into one immutable ``MappingSet``.

Layout: ``devices/*.yaml`` (device mappings) and ``types/*.yaml`` (type catalogues). Files named
``*.test.yaml`` are golden tests, not mappings. Loading reports the problems of *all* files at
once; a set either loads whole or not at all, so a broken edit never half-replaces a good set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

from hub.contracts import Extraction, MeasurementExtractor
from hub.errors import ErrorLocation, MappingError, UnknownSourceError
from hub.mappings.extract import CompiledDeviceMapping
from hub.mappings.hl7v2 import Hl7v2Maps, load_hl7v2_maps
from hub.mappings.layouts import SampledGrouping
from hub.mappings.schema import DeviceMapping, TypeCatalogue, TypeSpec
from hub.mappings.yamlfile import load_model, position


def _mapping_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.yaml") if not p.name.endswith(".test.yaml"))


@dataclass(frozen=True)
class MappingSet:
    """All device mappings and measurement types, plus a fingerprint of the files they came from."""

    devices: dict[str, CompiledDeviceMapping]
    types: dict[str, TypeSpec]
    fingerprint: str
    files: tuple[str, ...] = field(default_factory=tuple)
    hl7v2: Hl7v2Maps | None = None  # mappings/hl7v2: HL7v2 messages keyed on MSH-9 and OBX-3
    #: (device mapping "file@vN", type) → its SampledData grouping (a mapping's `sampled`)
    sampling: dict[tuple[str, str], SampledGrouping] = field(default_factory=dict)

    def extract(self, mapping: str, document: Any, meta: dict[str, Any] | None = None
                ) -> Extraction:
        """``hub.contracts.MeasurementExtractor``: run the named device mapping (``hl7v2`` and
        ``hl7v2:<sender map>`` run the HL7v2 engine over a tokenized message); ``meta``: what
        the channel knew beside the body (device mappings read it as ``meta``)."""
        if self.hl7v2 is not None and (mapping == "hl7v2" or mapping.startswith("hl7v2:")):
            return self.hl7v2.extract(mapping, document)
        compiled = self.devices.get(mapping)
        if compiled is None:
            raise UnknownSourceError(f"no device mapping named '{mapping}'")
        return compiled.extract(document, meta)

    def with_meta(self, meta: dict[str, Any] | None) -> MeasurementExtractor:
        """This set as a connector's ``extract`` sees it for one message: ``meta`` in every
        device mapping's scope (connectors call ``extract(mapping, document)`` as before)."""
        return self if meta is None else _WithMeta(self, meta)


@dataclass(frozen=True, slots=True)
class _WithMeta:
    mappings: MappingSet
    meta: dict[str, Any]

    def extract(self, mapping: str, document: Any) -> Extraction:
        return self.mappings.extract(mapping, document, self.meta)


def fingerprint(root: Path) -> str:
    """A hash over names, sizes and mtimes: cheap enough to poll for hot reload."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.yaml")) if root.is_dir() else []:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def load_mapping_set(root: Path, default_tz: tzinfo = UTC) -> MappingSet:
    """Load and validate every mapping under ``root``; MappingError lists every problem."""
    problems: list[ErrorLocation] = []
    devices: dict[str, CompiledDeviceMapping] = {}
    types: dict[str, TypeSpec] = {}
    sampling: dict[tuple[str, str], SampledGrouping] = {}
    type_origin: dict[str, str] = {}
    files: list[str] = []
    for path in _mapping_files(root / "types"):
        try:
            catalogue = load_model(path, TypeCatalogue)
        except MappingError as exc:
            problems.extend(exc.problems or [ErrorLocation(str(path), None, None, "", exc.message)])
            continue
        files.append(str(path))
        for name, spec in catalogue.types.items():
            if name in types:
                problems.append(ErrorLocation(str(path), None, None, f"types.{name}",
                                              f"already defined in {type_origin[name]}"))
            types[name], type_origin[name] = spec, str(path)
    for path in _mapping_files(root / "devices"):
        try:
            mapping = load_model(path, DeviceMapping)
        except MappingError as exc:
            problems.extend(exc.problems or [ErrorLocation(str(path), None, None, "", exc.message)])
            continue
        files.append(str(path))
        if mapping.name in devices:
            problems.append(ErrorLocation(str(path), None, None, "name",
                                          f"'{mapping.name}' already defined in "
                                          f"{devices[mapping.name].file}"))
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        devices[mapping.name] = CompiledDeviceMapping(mapping, rel, default_tz)
        for mtype, grouping in mapping.sampled.items():
            problem = _ungroupable(types.get(mtype), mtype)
            if problem is not None:
                line, col = position(path, ("sampled", mtype))
                problems.append(ErrorLocation(str(path), line, col, f"sampled.{mtype}", problem))
            sampling[(devices[mapping.name].ref, mtype)] = grouping
        for index, rule in enumerate(mapping.measurements):
            for key, mtype in (rule.type_map or {}).items():
                if mtype not in types:
                    line, col = position(path, ("measurements", index, "type_map", key))
                    problems.append(ErrorLocation(str(path), line, col,
                                                  f"measurements[{index}].type_map.{key}",
                                                  f"unknown measurement type '{mtype}'"))
    hl7v2, hl7_problems, hl7_files = load_hl7v2_maps(root / "hl7v2", types, default_tz, root)
    problems.extend(hl7_problems)
    files.extend(hl7_files)
    if problems:
        raise MappingError(f"{len(problems)} problem(s) in mappings under {root}",
                           problems=problems)
    return MappingSet(devices, types, fingerprint(root), tuple(files), hl7v2, sampling)


def _ungroupable(spec: TypeSpec | None, mtype: str) -> str | None:
    """Why a type cannot be grouped into SampledData (one number per slot, one unit), or None."""
    if spec is None:
        return f"unknown measurement type '{mtype}'"
    if spec.value != "quantity" or spec.components or spec.unit is None:
        return ("only single-quantity types can be grouped into SampledData "
                "(not panels with components, codes or text)")
    return None
