"""The mapping-file language, declared once as pydantic models.

Two stages, as Azure iomt-fhir does:

1. A *device mapping* (``mappings/devices/*.yaml``) finds measurements in a decoded payload with
   JMESPath expressions. Item expressions see ``{"item": <element of each>, "root": <payload>}``,
   so ``item.value`` reads the current reading and ``root.device.id`` the envelope (and
   ``parent``, the enclosing element, when ``each`` walks nested arrays; ``meta``, what the
   channel knew beside the payload: an MQTT message's ``topic`` and ``topic_levels``). A constant
   is a JMESPath raw string literal: ``'urn:oid:1.2.3'``. Besides JMESPath's built-ins,
   expressions may call the hub's functions (``hub.mappings.functions``):
   ``exp10(value, exponent)`` and ``multiply(a, b)``, both exact in decimal.
2. A *type catalogue* (``mappings/types/*.yaml``) turns each measurement type into an Observation:
   codes, category, value kind, UCUM unit, components.

The JSON Schema for editors is generated from these models (``hub mappings schema``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from jmespath.exceptions import JMESPathError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.mappings.functions import compile_expression
from hub.mappings.layouts import FileLayout, SampledGrouping

SUPPORTED_VERSIONS = (1,)


def supported_version(value: int) -> int:
    """A file's ``version:`` must be one this hub reads (every mapping, catalogue, HL7v2 map and
    golden-test file declares one)."""
    if value not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported version {value}; this hub reads {SUPPORTED_VERSIONS}")
    return value

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_expression(value: str) -> str:
    try:
        compile_expression(value)
    except JMESPathError as exc:
        # one line, positioned in the expression (jmespath's own text spans lines with a caret)
        where = getattr(exc, "lex_position", None)
        what = getattr(exc, "msg", None) or str(exc)
        if type(exc).__name__ == "IncompleteExpressionError":
            what = "incomplete expression"
        at = f" at character {where}" if isinstance(where, int) else ""
        raise ValueError(f"not a valid JMESPath expression ({what}{at})") from None
    return value


#: A JMESPath expression, checked (syntax and function names) when the file loads.
Expr = Annotated[str, AfterValidator(_check_expression)]


class IdentifierExpr(_Strict):
    """Where to find an identifier: ``system`` and ``value`` are JMESPath expressions."""

    system: Expr = Field(description="JMESPath; a literal looks like 'urn:oid:1.2.3'")
    value: Expr = Field(description="JMESPath giving the identifier value")


TimeFormat = Literal["iso8601", "epoch_s", "epoch_ms", "epoch_ns", "local_epoch_s", "dotnet_date"]


class Refusal(_Strict):
    """A shape the mapping knowingly refuses, with the reason the sender is told."""

    when: Expr = Field(description="JMESPath over the same scope as `match` (for a mapping-level "
                                   "refusal without `each`: over the payload); truthy refuses")
    reason: str = Field(min_length=1, description="why, in words a sender can act on "
                                                  "(never quote values: they may be PHI)")


class DocumentRefusal(Refusal):
    """A refusal checked before any measurement rule: the whole payload, or each item of it."""

    each: Expr | list[Expr] | None = Field(
        None, description="as a measurement rule's `each`; omit to test the whole payload "
                          "(then a refusal stops the message)", min_length=1)


class MeasurementRule(_Strict):
    """One kind of measurement a payload may contain."""

    each: Expr | list[Expr] | None = Field(
        None, min_length=1,
        description="JMESPath over the payload giving the items; omit for one item. A list "
                    "walks nested arrays: each expression runs over every item of the one "
                    "before (e.g. [body.measuregrps, measures]); expressions then see the "
                    "innermost element as `item` and the one enclosing it as `parent`"
    )
    match: Expr | None = Field(
        None, description="JMESPath over {item, root}; falsy skips the item. Mind JMESPath's "
                          "precedence: `!a.b` is `(!a).b`; write `!(a.b)`")
    refuse: list[Refusal] = Field(
        default_factory=list,
        description="checked on each matched item: the first truthy `when` turns the item into a "
                    "refused reading with its `reason` (kept and reported, never silently dropped)")
    type: Expr = Field(description="JMESPath giving the measurement type (or a key of type_map)")
    type_map: dict[str, str] | None = Field(
        None, description="maps what `type` yields to catalogue type names; unmapped items skip"
    )
    time: Expr = Field(description="JMESPath giving the effective time")
    time_format: TimeFormat = Field(
        "iso8601", description="iso8601; epoch_s / epoch_ms / epoch_ns (UNIX time, UTC; numbers "
                               "or numeric strings); local_epoch_s (seconds since 1970 counted on "
                               "the local wall clock, as iHealth's MDate: needs `time_zone`); "
                               "dotnet_date (Date(1745081013817) or Date(1745081013817-0400), "
                               "as Dexcom Share)")
    time_zone: Expr | None = Field(
        None, description="JMESPath giving the source's zone: an IANA name (Europe/Paris) or a UTC "
                          "offset (-0800, +02:00). Times without an offset are read on that clock; "
                          "absolute times keep their instant and are shown at that offset")
    device: IdentifierExpr
    patient: IdentifierExpr | None = None
    unit: Expr | None = Field(None, description="JMESPath giving the unit the source used")
    unit_map: dict[str, str] | None = Field(
        None, description="maps what `unit` yields (as text) to a UCUM unit, for sources that "
                          "code units (iHealth BPUnit 0 → mm[Hg]; Withings meastype 1 → kg); a "
                          "code not listed refuses the item")
    values: dict[str, Expr] | Expr = Field(
        description="name → JMESPath per input, or one JMESPath yielding an object of inputs"
    )
    correlation_id: Expr | None = Field(
        None, description="JMESPath giving the source's id of the reading (kept for tracing)")
    comparator: Expr | None = Field(
        None, description="JMESPath giving FHIR's Quantity.comparator for the value: '<', '<=', "
                          "'>=' or '>' (a reading beyond the device's range, e.g. Dexcom's "
                          "'Low' = below 40 mg/dL); null for an exact value")


class DeviceMapping(_Strict):
    """A device mapping file: how one source's payloads yield measurements."""

    version: int = Field(description="mapping language version; 1")
    name: str = Field(description="the name connectors refer to (defaults to the connector name)")
    description: str = ""
    refuse: list[DocumentRefusal] = Field(
        default_factory=list,
        description="payload shapes this mapping knowingly refuses (e.g. a vendor's error body), "
                    "checked before the measurement rules")
    measurements: list[MeasurementRule] = Field(min_length=1)
    sampled: dict[str, SampledGrouping] = Field(
        default_factory=dict,
        description="catalogue type → grouping: that type's readings from this mapping become "
                    "one Observation per period with SampledData (e.g. a CGM every PT5M, one "
                    "Observation per PT1H); late readings merge into their period's Observation")
    files: dict[str, FileLayout] = Field(
        default_factory=dict,
        description="named layouts of export files `hub import SOURCE --layout NAME` reads "
                    "into this mapping's source (JSON, NDJSON, CSV)")

    _version = field_validator("version")(supported_version)


class Coding(_Strict):
    """A code with its system, as published (cite the source in the catalogue file)."""

    system: str = LOINC
    code: str
    display: str


class SourceUnit(_Strict):
    """A unit sources may send that the hub converts into the canonical unit."""

    code: str = Field(description="UCUM code of the source unit, e.g. [lb_av], [degF], mmol/L")
    aliases: list[str] = Field(default_factory=list,
                               description="other spellings of this source unit, e.g. lb, lbs")


class UnitSpec(_Strict):
    """The UCUM unit an Observation carries, and the units sources may send for it.

    A reading in ``code`` or one of ``aliases`` is stored untouched; one in a ``convert_from``
    unit is converted (hub.normalize.units) and rounded to the input's resolution; any other
    unit is refused with the reason.
    """

    code: str = Field(description="canonical UCUM code, e.g. mm[Hg], /min, %, kg, Cel")
    display: str = Field(description="human unit shown in Quantity.unit")
    aliases: list[str] = Field(default_factory=list, description="other spellings, same unit")
    convert_from: list[SourceUnit] = Field(
        default_factory=list, description="source units accepted and converted into `code`")
    molar_mass: float | None = Field(
        None, gt=0, description="g/mol of the analyte, needed to convert between mass and "
                                "substance concentrations (mg/dL <-> mmol/L); cite the source")

    @model_validator(mode="after")
    def _spellings_unambiguous(self) -> UnitSpec:
        seen = {self.code: self.code, **{alias: self.code for alias in self.aliases}}
        for source in self.convert_from:
            for spelling in (source.code, *source.aliases):
                if spelling in seen:
                    raise ValueError(f"unit spelling '{spelling}' is listed twice "
                                     f"(for {seen[spelling]} and {source.code})")
                seen[spelling] = source.code
        return self


class Plausible(_Strict):
    """The range outside which a reading is physically or technically implausible.

    Bounds are in the canonical unit. A reading outside is kept, marked and held for review
    (hub.normalize.plausibility), never dropped and never stored as a valid final result.
    """

    min: float | None = Field(None, description="lowest plausible value (canonical unit)")
    max: float | None = Field(None, description="highest plausible value (canonical unit)")
    min_exclusive: bool = Field(False, description="true: `min` itself is implausible")
    max_exclusive: bool = Field(False, description="true: `max` itself is implausible")
    why: str = Field(min_length=1, description="rationale and source of the bounds")

    @model_validator(mode="after")
    def _ordered(self) -> Plausible:
        if self.min is None and self.max is None:
            raise ValueError("give `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class ComponentSpec(_Strict):
    """One component of a panel Observation (e.g. systolic of a blood-pressure panel)."""

    input: str = Field(description="the measurement value name feeding this component")
    codes: list[Coding] = Field(min_length=1)
    unit: UnitSpec
    required: bool = True
    plausible: Plausible | None = None


class TypeSpec(_Strict):
    """How one measurement type becomes an Observation."""

    codes: list[Coding] = Field(min_length=1, description="Observation.code codings")
    category: Literal["vital-signs", "activity", "laboratory", "survey", "exam"] | None = None
    profile: str | None = Field(None, description="meta.profile canonical URL")
    value: Literal["quantity", "string", "codeable-concept", "integer", "none"] = "quantity"
    input: str = Field("value", description="the measurement value name holding the value")
    unit: UnitSpec | None = None
    components: list[ComponentSpec] = Field(default_factory=list)
    plausible: Plausible | None = Field(None, description="plausible range of the value")
    ordered: list[str] = Field(
        default_factory=list,
        description="component inputs whose values must strictly increase in this order, e.g. "
                    "[diastolic, mean, systolic]; a reading that breaks it (swapped fields) is "
                    "held for review")

    @model_validator(mode="after")
    def _ordered_names_components(self) -> TypeSpec:
        inputs = {c.input for c in self.components}
        unknown = [name for name in self.ordered if name not in inputs]
        if unknown:
            raise ValueError(f"`ordered` names inputs that are not components: {unknown}")
        return self


class TypeCatalogue(_Strict):
    """A measurement-type catalogue file."""

    version: int
    types: dict[str, TypeSpec]

    _version = field_validator("version")(supported_version)
