"""Golden tests for mappings: a payload → the FHIR it must produce, declared in YAML.

A test file sits beside its mapping (``mappings/devices/acme.test.yaml`` next to ``acme.yaml``)::

    version: 1
    mapping: acme                 # the device mapping's `name`
    cases:
      - name: one blood pressure reading
        input: ../../fixtures/devices/acme/bp-01.json       # relative to this file
        expect: ../../fixtures/expected/acme/bp-01.json     # a FHIR collection Bundle
      - name: an error body is refused
        input: ../../fixtures/devices/acme/error.json
        errors: ["session expired"]                         # each must appear in an error

Comparison is on content: run-specific fields (``meta.source``, ``meta.lastUpdated``,
``meta.versionId``, the Bundle's ``id``/``timestamp`` and ``fullUrl``) are ignored; everything
else, including ids (deterministic) and codes, must be equal. A case passes when the resources
match and every error produced was expected (an unexpected error fails the case, so a mapping
cannot start silently refusing readings).

Turning measurements into Observations is stage 2 (``hub.normalize``), a layer above this one;
callers pass it in as ``to_fhir``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field, field_validator

from hub.contracts import Measurement, mqtt_meta
from hub.errors import DataError, ErrorLocation, MappingError
from hub.mappings.catalogue import MappingSet
from hub.mappings.extract import CompiledDeviceMapping
from hub.mappings.schema import (
    DeviceMapping,
    TypeCatalogue,
    TypeSpec,
    _Strict,
    supported_version,
)
from hub.mappings.yamlfile import load_model

ToFhir = Callable[[Measurement, TypeSpec], dict[str, Any]]
IGNORED_META = frozenset({"source", "lastUpdated", "versionId"})


class GoldenCase(_Strict):
    """One payload and what it must produce."""

    name: str = Field(min_length=1)
    input: str = Field(description="payload file, relative to the test file")
    envelope: dict[str, Any] | None = Field(
        None, description="wrap the payload as {<envelope>..., response: <payload>}: how pollers "
                          "post vendor-cloud responses that do not say whose they are")
    topic: str | None = Field(
        None, description="the MQTT topic the payload arrives on: the mapping reads it as "
                          "meta.topic and meta.topic_levels (a device named only in its topic)")
    expect: str | None = Field(
        None, description="expected FHIR collection Bundle, relative to the test file; omit when "
                          "the payload must produce nothing but the listed errors")
    errors: list[str] = Field(
        default_factory=list, description="text each expected error contains (e.g. the reason)")


class GoldenFile(_Strict):
    """A golden test file (``*.test.yaml``)."""

    version: int = Field(description="test file version; 1")
    mapping: str = Field(description="the device mapping's name")
    cases: list[GoldenCase] = Field(min_length=1)

    _version = field_validator("version")(supported_version)


@dataclass
class CaseResult:
    """The outcome of one case; ``problems`` says what differed, one line each."""

    file: Path
    name: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def golden_files(path: Path) -> list[Path]:
    """``path`` itself if it is a test file, else every ``*.test.yaml`` under it."""
    if path.is_file():
        return [path]
    return sorted(path.rglob("*.test.yaml"))


def mappings_root(path: Path) -> Path:
    """The mappings folder a test file belongs to (the nearest ancestor holding ``types/``)."""
    for folder in [path, *path.parents] if path.is_dir() else path.parents:
        if (folder / "types").is_dir():
            return folder
    return path if path.is_dir() else path.parent


def single_mapping_set(mapping_file: Path, root: Path, default_tz: tzinfo = UTC) -> MappingSet:
    """One device mapping file (valid or not yet committed) with the type catalogues of ``root``:
    what ``hub convert --mapping`` runs, so a draft can be tried before it goes live."""
    mapping = load_model(mapping_file, DeviceMapping)
    types: dict[str, TypeSpec] = {}
    folder = root / "types"
    for path in sorted(folder.rglob("*.yaml")) if folder.is_dir() else []:
        if not path.name.endswith(".test.yaml"):
            types.update(load_model(path, TypeCatalogue).types)
    # the same reference a live hub records (path under the mappings folder, else the name)
    resolved = mapping_file.resolve()
    ref = resolved.relative_to(root.resolve()).as_posix() \
        if resolved.is_relative_to(root.resolve()) else mapping_file.name
    compiled = CompiledDeviceMapping(mapping, ref, default_tz)
    return MappingSet({mapping.name: compiled}, types, "", (str(mapping_file),))


def convert(payload: Any, mapping: str, mappings: MappingSet, to_fhir: ToFhir,
            meta: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Run one device mapping and the catalogue over a payload (``meta``: what the channel
    knew beside it): (resources, error lines)."""
    try:
        extraction = mappings.extract(mapping, payload, meta)
    except DataError as exc:
        return [], [_describe(exc)]
    errors = [_describe(e) for e in extraction.errors]
    resources: list[dict[str, Any]] = []
    for m in extraction.measurements:
        spec = mappings.types.get(m.type)
        if spec is None:
            errors.append(f"{m.location}: unknown measurement type '{m.type}'")
            continue
        try:
            resources.append(to_fhir(m, spec))
        except DataError as exc:
            errors.append(_describe(exc))
    return resources, errors


def run_file(path: Path, mappings: MappingSet, to_fhir: ToFhir,
             *, update: bool = False) -> Iterator[CaseResult]:
    """Run every case of one test file; ``update`` rewrites expected files with what was made."""
    spec = load_model(path, GoldenFile)
    for case in spec.cases:
        result = CaseResult(path, case.name)
        try:
            payload = _payload(path.parent / case.input, case.envelope)
        except MappingError as exc:
            result.problems.append(exc.message)
            yield result
            continue
        meta = mqtt_meta(case.topic) if case.topic is not None else None
        result.resources, result.errors = convert(payload, spec.mapping, mappings, to_fhir, meta)
        _check_errors(case, result)
        if case.expect is not None:
            expected_path = path.parent / case.expect
            if update:
                _write_bundle(expected_path, result.resources)
            _check_resources(expected_path, result)
        elif result.resources:
            result.problems.append(f"produced {len(result.resources)} resource(s) but the case "
                                   "has no `expect` file")
        yield result


def _describe(error: DataError) -> str:
    return f"{error.location}: {error.message}" if error.location else error.message


def _payload(path: Path, envelope: dict[str, Any] | None) -> Any:
    try:
        payload = orjson.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except OSError as exc:
        raise MappingError(f"cannot read input {path} ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise MappingError(f"input {path} is not JSON ({exc.msg})") from None
    return payload if envelope is None else {**envelope, "response": payload}


def _check_errors(case: GoldenCase, result: CaseResult) -> None:
    for wanted in case.errors:
        if not any(wanted in error for error in result.errors):
            result.problems.append(f"expected an error containing {wanted!r}; got "
                                   f"{result.errors or 'none'}")
    for error in result.errors:
        if not any(wanted in error for wanted in case.errors):
            result.problems.append(f"unexpected error: {error}")


def _write_bundle(path: Path, resources: list[dict[str, Any]]) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": _comparable(r)} for r in resources]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")


def _check_resources(path: Path, result: CaseResult) -> None:
    try:
        bundle = orjson.loads(path.read_bytes())
    except OSError as exc:
        result.problems.append(f"cannot read expected {path} ({exc.strerror}); "
                               "run `hub mappings test --update` to create it")
        return
    except orjson.JSONDecodeError as exc:
        result.problems.append(f"expected {path} is not JSON ({exc.msg})")
        return
    expected = [_comparable(e.get("resource", {})) for e in bundle.get("entry", [])]
    actual = [_comparable(r) for r in result.resources]
    if len(expected) != len(actual):
        result.problems.append(f"expected {len(expected)} resource(s), got {len(actual)}")
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        result.problems.extend(diff(want, got, f"entry[{index}]"))


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without run-specific fields."""
    out = dict(resource)
    meta = out.get("meta")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if k not in IGNORED_META}
        if kept:
            out["meta"] = kept
        else:
            out.pop("meta")
    return out


def diff(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Every difference as ``path: expected X, got Y`` (numbers compare by value: 1 == 1.0)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = []
        for key in sorted(set(expected) | set(actual)):
            where = f"{path}.{key}"
            if key not in actual:
                lines.append(f"{where}: missing (expected {_show(expected[key])})")
            elif key not in expected:
                lines.append(f"{where}: unexpected {_show(actual[key])}")
            else:
                lines.extend(diff(expected[key], actual[key], where))
        return lines
    if isinstance(expected, list) and isinstance(actual, list):
        lines = [f"{path}: expected {len(expected)} item(s), got {len(actual)}"] \
            if len(expected) != len(actual) else []
        for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
            lines.extend(diff(want, got, f"{path}[{index}]"))
        return lines
    if isinstance(expected, bool) or isinstance(actual, bool):
        same = type(expected) is type(actual) and expected == actual
    else:
        same = expected == actual
    return [] if same else [f"{path}: expected {_show(expected)}, got {_show(actual)}"]


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def problems_as_locations(results: list[CaseResult]) -> list[ErrorLocation]:
    """Failed cases as positioned lines (for the CLI summary)."""
    return [ErrorLocation(str(r.file), None, None, r.name, p) for r in results for p in r.problems]
