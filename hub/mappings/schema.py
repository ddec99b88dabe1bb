"""The mapping-file language, declared once as pydantic models.

Two stages, as Azure iomt-fhir does:

1. A *device mapping* (``mappings/devices/*.yaml``) finds measurements in a decoded payload with
   JMESPath expressions. Item expressions see ``{"item": <element of each>, "root": <payload>}``,
   so ``item.value`` reads the current reading and ``root.device.id`` the envelope. A constant is
   a JMESPath raw string literal: ``'urn:oid:1.2.3'``.
2. A *type catalogue* (``mappings/types/*.yaml``) turns each measurement type into an Observation:
   codes, category, value kind, UCUM unit, components.

The JSON Schema for editors is generated from these models (``hub mappings schema``).
"""

from __future__ import annotations

from typing import Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, field_validator

SUPPORTED_VERSIONS = (1,)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_expression(value: str) -> str:
    try:
        jmespath.compile(value)
    except JMESPathError as exc:
        raise ValueError(f"not a valid JMESPath expression: {exc}") from None
    return value


class IdentifierExpr(_Strict):
    """Where to find an identifier: ``system`` and ``value`` are JMESPath expressions."""

    system: str = Field(description="JMESPath; a literal looks like 'urn:oid:1.2.3'")
    value: str = Field(description="JMESPath giving the identifier value")

    _v = field_validator("system", "value")(_check_expression)


class MeasurementRule(_Strict):
    """One kind of measurement a payload may contain."""

    each: str | None = Field(
        None, description="JMESPath over the payload giving the items; omit for one item"
    )
    match: str | None = Field(None, description="JMESPath over {item, root}; falsy skips the item")
    type: str = Field(description="JMESPath giving the measurement type (or a key of type_map)")
    type_map: dict[str, str] | None = Field(
        None, description="maps what `type` yields to catalogue type names; unmapped items skip"
    )
    time: str = Field(description="JMESPath giving the effective time")
    time_format: Literal["iso8601", "epoch_s", "epoch_ms"] = "iso8601"
    device: IdentifierExpr
    patient: IdentifierExpr | None = None
    unit: str | None = Field(None, description="JMESPath giving the unit the source used")
    values: dict[str, str] | str = Field(
        description="name → JMESPath per input, or one JMESPath yielding an object of inputs"
    )
    correlation_id: str | None = None

    @field_validator("each", "match", "type", "time", "unit", "correlation_id")
    @classmethod
    def _expr(cls, value: str | None) -> str | None:
        return None if value is None else _check_expression(value)

    @field_validator("values")
    @classmethod
    def _values(cls, value: dict[str, str] | str) -> dict[str, str] | str:
        if isinstance(value, str):
            return _check_expression(value)
        for expr in value.values():
            _check_expression(expr)
        return value


class DeviceMapping(_Strict):
    """A device mapping file: how one source's payloads yield measurements."""

    version: int = Field(description="mapping language version; 1")
    name: str = Field(description="the name connectors refer to (defaults to the connector name)")
    description: str = ""
    measurements: list[MeasurementRule] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported version {value}; this hub reads {SUPPORTED_VERSIONS}")
        return value


class Coding(_Strict):
    """A code with its system, as published (cite the source in the catalogue file)."""

    system: str = LOINC
    code: str
    display: str


class UnitSpec(_Strict):
    """The UCUM unit an Observation carries, and the spellings sources may use for it."""

    code: str = Field(description="UCUM code, e.g. mm[Hg], /min, %, kg, Cel")
    display: str = Field(description="human unit shown in Quantity.unit")
    aliases: list[str] = Field(default_factory=list, description="other spellings, same unit")


class ComponentSpec(_Strict):
    """One component of a panel Observation (e.g. systolic of a blood-pressure panel)."""

    input: str = Field(description="the measurement value name feeding this component")
    codes: list[Coding] = Field(min_length=1)
    unit: UnitSpec
    required: bool = True


class TypeSpec(_Strict):
    """How one measurement type becomes an Observation."""

    codes: list[Coding] = Field(min_length=1, description="Observation.code codings")
    category: Literal["vital-signs", "activity", "laboratory", "survey", "exam"] | None = None
    profile: str | None = Field(None, description="meta.profile canonical URL")
    value: Literal["quantity", "string", "codeable-concept", "integer", "none"] = "quantity"
    input: str = Field("value", description="the measurement value name holding the value")
    unit: UnitSpec | None = None
    components: list[ComponentSpec] = Field(default_factory=list)


class TypeCatalogue(_Strict):
    """A measurement-type catalogue file."""

    version: int
    types: dict[str, TypeSpec]

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported version {value}; this hub reads {SUPPORTED_VERSIONS}")
        return value
