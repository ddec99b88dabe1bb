"""Load ``mappings/hl7v2/`` into compiled lookup tables (``Hl7v2Maps``), checking every row.

A row that names an unknown catalogue type, a panel input the panel does not have, or a source
key the file does not define is a load problem (reported with file:line:column, and the whole
mapping set is refused, as for device mappings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

from hub.contracts import Code, Extraction
from hub.errors import ErrorLocation, MappingError
from hub.mappings.hl7v2.codes import LOINC
from hub.mappings.hl7v2.schema import CodeTarget, EngineSettings, MdcTable, SenderMap
from hub.mappings.schema import TypeSpec
from hub.mappings.yamlfile import load_model

MDC_FILE = "mdc.yaml"
SETTINGS_FILE = "settings.yaml"


@dataclass(frozen=True, slots=True)
class Target:
    """What one source code maps to (a compiled :class:`CodeTarget`)."""

    type: str | None = None
    codes: tuple[Code, ...] = ()
    category: str | None = None
    panel_type: str | None = None  # this code is a part of that panel ...
    panel_input: str | None = None  # ... feeding this input
    names_panel: str | None = None  # this code names a panel (an NIBP channel)
    display: str | None = None
    mapping: str = "hl7v2"


def _target(spec: CodeTarget, display: str | None, mapping: str) -> Target:
    return Target(
        type=spec.type,
        codes=tuple(Code(c.system, c.code, c.display) for c in spec.codes),
        category=spec.category,
        panel_type=spec.component.panel if spec.component else None,
        panel_input=spec.component.input if spec.component else None,
        names_panel=spec.panel,
        display=display,
        mapping=mapping,
    )


@dataclass(frozen=True)
class CompiledSender:
    """A sender map ready for lookups."""

    name: str
    application: str | None
    facility: str | None
    code_system: str | None
    codes: dict[str, Target]
    units: dict[str, str]

    def matches(self, application: str, facility: str) -> bool:
        return ((self.application is None or self.application == application)
                and (self.facility is None or self.facility == facility))


@dataclass(frozen=True)
class Hl7v2Maps:
    """Everything the HL7v2 extraction engine looks codes up in (immutable, shared by threads)."""

    types: dict[str, TypeSpec]
    mdc: dict[str, Target]
    mdc_units: dict[str, str]  # MDC unit code (and refid) → UCUM
    senders: tuple[CompiledSender, ...]
    settings: EngineSettings
    loinc_types: dict[str, str]  # LOINC code → the catalogue type whose code it is
    default_tz: tzinfo = UTC
    mdc_ref: str = "hl7v2/mdc.yaml@v1"
    files: tuple[str, ...] = field(default_factory=tuple)
    # What rows derive from field text alone (codes, units, paths, equipment), by that text
    # (``containment.memo``): a monitor repeats the same OBX-3/4/6/18 in every message.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def sender_for(self, application: str, facility: str) -> CompiledSender | None:
        for sender in self.senders:
            if sender.matches(application, facility):
                return sender
        return None

    def named(self, name: str) -> CompiledSender | None:
        return next((s for s in self.senders if s.name == name), None)

    def extract(self, mapping: str, document: Any) -> Extraction:
        """``MeasurementExtractor`` for ``hl7v2`` and ``hl7v2:<sender map>``."""
        from hub.mappings.hl7v2.engine import extract  # engine imports this module

        return extract(self, mapping, document)


def _check_target(spec: CodeTarget, types: dict[str, TypeSpec], where: str,
                  path: Path) -> list[ErrorLocation]:
    problems: list[ErrorLocation] = []

    def bad(what: str) -> None:
        problems.append(ErrorLocation(str(path), None, None, where, what))

    for name in (spec.type, spec.panel):
        if name is not None and name not in types:
            bad(f"unknown measurement type '{name}'")
    if spec.component is not None:
        panel = types.get(spec.component.panel)
        if panel is None:
            bad(f"unknown panel type '{spec.component.panel}'")
        elif spec.component.input not in {c.input for c in panel.components}:
            bad(f"panel '{spec.component.panel}' has no input '{spec.component.input}'")
    return problems


def _loinc_types(types: dict[str, TypeSpec]) -> dict[str, str]:
    # A LOINC code names the type that leads with it; when several do (heart-rate and
    # heart-rate-oximetry both lead with 8867-4) the one coded by that LOINC alone wins.
    found: dict[str, list[str]] = {}
    for name, spec in types.items():
        first = spec.codes[0]
        if first.system == LOINC:
            found.setdefault(first.code, []).append(name)
    out: dict[str, str] = {}
    for code, names in found.items():
        plain = [n for n in names if len(types[n].codes) == 1]  # 8867-4 alone: heart-rate
        chosen = names if len(names) == 1 else plain
        if len(chosen) == 1:
            out[code] = chosen[0]
    return out


def hl7v2_file_model(path: Path) -> type[MdcTable] | type[EngineSettings] | type[SenderMap]:
    """Which model a file under ``mappings/hl7v2/`` is, by its name (for ``hub mappings lint``)."""
    if path.name == MDC_FILE:
        return MdcTable
    if path.name == SETTINGS_FILE:
        return EngineSettings
    return SenderMap


def load_hl7v2_maps(folder: Path, types: dict[str, TypeSpec], default_tz: tzinfo,
                    root: Path) -> tuple[Hl7v2Maps | None, list[ErrorLocation], list[str]]:
    """Load the folder; returns (maps or None when the folder is absent, problems, files)."""
    if not folder.is_dir():
        return None, [], []
    problems: list[ErrorLocation] = []
    files: list[str] = []

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    def load(path: Path, model: Any) -> Any:
        try:
            loaded = load_model(path, model)
        except MappingError as exc:
            problems.extend(exc.problems or [ErrorLocation(str(path), None, None, "",
                                                           exc.message)])
            return None
        files.append(str(path))
        return loaded

    settings = EngineSettings(version=1)
    if (folder / SETTINGS_FILE).is_file():
        settings = load(folder / SETTINGS_FILE, EngineSettings) or settings
    mdc: dict[str, Target] = {}
    units: dict[str, str] = {}
    mdc_ref = f"{rel(folder / MDC_FILE)}@v1"
    if (folder / MDC_FILE).is_file() and (table := load(folder / MDC_FILE, MdcTable)):
        for index, row in enumerate(table.codes):
            problems.extend(_check_target(row, types, f"codes[{index}]", folder / MDC_FILE))
            mdc[str(row.mdc)] = _target(row, row.refid, mdc_ref)
        for unit in table.units:
            units[str(unit.mdc)] = unit.ucum
            units[unit.refid] = unit.ucum
    senders: list[CompiledSender] = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name in (MDC_FILE, SETTINGS_FILE) or path.name.endswith(".test.yaml"):
            continue
        sender = load(path, SenderMap)
        if sender is None:
            continue
        ref = f"{rel(path)}@v{sender.version}"
        codes: dict[str, Target] = {}
        for code, spec in sender.codes.items():
            problems.extend(_check_target(spec, types, f"codes.{code}", path))
            codes[code] = _target(spec, None, ref)
        if any(s.name == sender.name for s in senders):
            problems.append(ErrorLocation(str(path), None, None, "name",
                                          f"sender map '{sender.name}' is defined twice"))
        senders.append(CompiledSender(sender.name, sender.match.sending_application,
                                      sender.match.sending_facility, sender.code_system, codes,
                                      dict(sender.units)))
    maps = Hl7v2Maps(dict(types), mdc, units, tuple(senders), settings, _loinc_types(types),
                     default_tz, mdc_ref, tuple(files))
    return maps, problems, files


__all__ = ["CompiledSender", "Hl7v2Maps", "Target", "load_hl7v2_maps"]
