"""Stage 1 of the mapping language: run a device mapping's JMESPath over a payload.

Expressions are compiled once when the file loads; per item the engine evaluates them against
``{"item": item, "root": payload}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import jmespath
from jmespath.parser import ParsedResult

from hub.contracts import Extraction, Identifier, Measurement
from hub.errors import DataError
from hub.mappings.schema import DeviceMapping, IdentifierExpr, MeasurementRule


def _compile(expr: str | None) -> ParsedResult | None:
    return None if expr is None else jmespath.compile(expr)


@dataclass(frozen=True)
class _CompiledIdentifier:
    system: ParsedResult
    value: ParsedResult

    @classmethod
    def of(cls, spec: IdentifierExpr) -> _CompiledIdentifier:
        return cls(jmespath.compile(spec.system), jmespath.compile(spec.value))

    def evaluate(self, scope: dict[str, Any], where: str, what: str) -> Identifier:
        system, value = self.system.search(scope), self.value.search(scope)
        if value is None or value == "" or system is None:
            raise DataError(f"{what} identifier missing", location=where)
        return Identifier(str(system), str(value))


def parse_time(raw: Any, fmt: str, default_tz: tzinfo, where: str) -> datetime:
    """A source time → aware datetime; naive ISO times take the configured default zone."""
    try:
        if fmt == "epoch_s":
            return datetime.fromtimestamp(float(raw), UTC)
        if fmt == "epoch_ms":
            return datetime.fromtimestamp(float(raw) / 1000.0, UTC)
        if not isinstance(raw, str):
            raise TypeError
        parsed = datetime.fromisoformat(raw)
    except (TypeError, ValueError, OverflowError, OSError):
        raise DataError(f"time is not a valid {fmt} value", location=where) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=default_tz)


class CompiledRule:
    """A MeasurementRule with its expressions compiled."""

    def __init__(self, rule: MeasurementRule, mapping_ref: str, default_tz: tzinfo) -> None:
        self.rule = rule
        self.mapping_ref = mapping_ref
        self.default_tz = default_tz
        self.each = _compile(rule.each)
        self.match = _compile(rule.match)
        self.type = jmespath.compile(rule.type)
        self.time = jmespath.compile(rule.time)
        self.unit = _compile(rule.unit)
        self.correlation = _compile(rule.correlation_id)
        self.device = _CompiledIdentifier.of(rule.device)
        self.patient = _CompiledIdentifier.of(rule.patient) if rule.patient else None
        if isinstance(rule.values, str):
            self.values_obj: ParsedResult | None = jmespath.compile(rule.values)
            self.values_map: dict[str, ParsedResult] = {}
        else:
            self.values_obj = None
            self.values_map = {k: jmespath.compile(v) for k, v in rule.values.items()}

    def _items(self, document: Any) -> list[Any]:
        if self.each is None:
            return [document]
        found = self.each.search(document)
        if found is None:
            return []
        return found if isinstance(found, list) else [found]

    def run(self, document: Any, prefix: str, into: Extraction) -> None:
        """Append each item's measurement to ``into``; a bad item adds a DataError instead."""
        for index, item in enumerate(self._items(document)):
            where = f"{prefix}[{index}]"
            try:
                found = self._one(document, item, where)
            except DataError as exc:
                into.errors.append(exc)
                continue
            if found is not None:
                into.measurements.append(found)

    def _one(self, document: Any, item: Any, where: str) -> Measurement | None:
        scope = {"item": item, "root": document}
        if self.match is not None and not self.match.search(scope):
            return None
        mtype = self.type.search(scope)
        if self.rule.type_map is not None:
            mtype = self.rule.type_map.get(str(mtype))
            if mtype is None:
                return None  # a type this mapping deliberately does not carry
        if not isinstance(mtype, str) or not mtype:
            raise DataError("measurement type missing", location=where)
        values = self._values(scope, where)
        unit = self.unit.search(scope) if self.unit is not None else None
        correlation = self.correlation.search(scope) if self.correlation is not None else None
        return Measurement(
            type=mtype,
            time=parse_time(self.time.search(scope), self.rule.time_format,
                            self.default_tz, f"{where}.time"),
            device=self.device.evaluate(scope, where, "device"),
            patient=self._patient(scope, where),
            values=values,
            unit=None if unit is None else str(unit),
            correlation_id=None if correlation is None else str(correlation),
            mapping=self.mapping_ref,
            location=where,
        )

    def _patient(self, scope: dict[str, Any], where: str) -> Identifier | None:
        if self.patient is None or self.patient.value.search(scope) in (None, ""):
            return None
        return self.patient.evaluate(scope, where, "patient")

    def _values(self, scope: dict[str, Any], where: str) -> dict[str, Any]:
        if self.values_obj is not None:
            found = self.values_obj.search(scope)
            if not isinstance(found, dict):
                raise DataError("values must be an object", location=f"{where}.values")
            values = {k: v for k, v in found.items() if v is not None}
        else:
            values = {}
            for name, expr in self.values_map.items():
                value = expr.search(scope)
                if value is not None:
                    values[name] = value
        if not values:
            raise DataError("no value found", location=where)
        return values


class CompiledDeviceMapping:
    """A loaded device mapping, ready to extract measurements."""

    def __init__(self, mapping: DeviceMapping, file: str, default_tz: tzinfo = UTC) -> None:
        self.mapping = mapping
        self.file = file
        self.ref = f"{file}@v{mapping.version}"
        self.rules = [CompiledRule(r, self.ref, default_tz) for r in mapping.measurements]

    def extract(self, document: Any) -> Extraction:
        """Every measurement the payload holds, and a DataError for each item that is bad."""
        out = Extraction()
        for rule in self.rules:
            rule.run(document, rule.rule.each or "$", out)
        if not out.measurements and not out.errors:
            raise DataError(f"no measurement matched mapping '{self.mapping.name}'")
        return out
