"""The HL7v2 mapping files under ``mappings/hl7v2/``, declared as pydantic models.

HL7v2 mappings key on MSH-9 and OBX-3 instead of JSONPath (the design card): the message type
picks the extraction (ORU^R01 → readings, ADT → patients), and each OBX's code picks the
measurement type through one of these tables:

- ``mdc.yaml`` (:class:`MdcTable`): IEEE 11073-10101 codes (IHE PCD-01, Continua/PHD) → a catalogue
  type (LOINC, UCUM, profile, plausibility come from the catalogue) or extra codings, plus the
  MDC_DIM_* unit codes → UCUM. Every row names its sources.
- ``settings.yaml`` (:class:`EngineSettings`): assigning authorities → identifier systems.
- any other ``*.yaml`` (:class:`SenderMap`): one sender's local codes (chosen by MSH-3/MSH-4).

LOINC-coded OBX (OBX-3.3 ``LN``) whose code is a catalogue type's LOINC code take that type
without any table (LOINC passthrough); any other code is kept as sent, typed by OBX-2.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hub.mappings.schema import Coding, _Strict, supported_version

Category = Literal["vital-signs", "activity", "laboratory", "survey", "exam"]
PanelInput = Literal["systolic", "diastolic", "mean"]


class PanelPart(_Strict):
    """This code is one component of a panel reading (e.g. NIBP systolic of the BP panel)."""

    panel: str = Field(description="catalogue type of the panel, e.g. blood-pressure")
    input: PanelInput = Field(description="the panel input this code feeds")


class CodeTarget(_Strict):
    """What a source code becomes: a catalogue type, or extra codings kept beside it."""

    type: str | None = Field(None, description="catalogue type name (mappings/types)")
    codes: list[Coding] = Field(default_factory=list,
                                description="codings added beside the source code when the code "
                                            "has no catalogue type (e.g. a LOINC translation)")
    category: Category | None = Field(None, description="category when there is no type")
    component: PanelPart | None = Field(None, description="grouped into this panel when the "
                                                          "other parts arrive on the same channel")
    panel: str | None = Field(None, description="this code names the panel itself (an NIBP "
                                                "channel): its readings group under this type")

    @model_validator(mode="after")
    def _one_target(self) -> CodeTarget:
        if self.type is not None and self.codes:
            raise ValueError("give `type` or `codes`, not both (a type brings its own codes)")
        return self


class MdcCode(CodeTarget):
    """One IEEE 11073-10101 code (32-bit: partition * 65536 + term code)."""

    mdc: int = Field(gt=0, description="the MDC code as sent in OBX-3.1")
    refid: str = Field(pattern=r"^MDC_[A-Z0-9_]+$", description="its reference identifier")
    source: list[str] = Field(min_length=1, description="keys of `sources` this row relies on")


class MdcUnit(_Strict):
    """One IEEE 11073-10101 unit code (partition 4, MDC_DIM_*) and its UCUM code."""

    mdc: int = Field(gt=262143, lt=327680, description="partition 4: 262144 + term code")
    refid: str = Field(pattern=r"^MDC_DIM_[A-Z0-9_]+$")
    ucum: str = Field(min_length=1)
    source: list[str] = Field(min_length=1)


class MdcTable(_Strict):
    """``mdc.yaml``: MDC codes and units, each row cited."""

    version: int
    sources: dict[str, str] = Field(min_length=1,
                                    description="citation key → the publication it stands for")
    units: list[MdcUnit] = Field(default_factory=list)
    codes: list[MdcCode] = Field(default_factory=list)

    _version = field_validator("version")(supported_version)

    @model_validator(mode="after")
    def _cited(self) -> MdcTable:
        known = set(self.sources)
        for kind, rows in (("units", self.units), ("codes", self.codes)):
            for row in rows:
                unknown = [key for key in row.source if key not in known]
                if unknown:
                    raise ValueError(f"{kind} row {row.mdc} cites unknown sources {unknown}")
        seen: set[int] = set()
        for code in self.codes:
            if code.mdc in seen:
                raise ValueError(f"code {code.mdc} is listed twice")
            seen.add(code.mdc)
        return self


class SenderMatch(_Strict):
    """Which messages a sender map applies to (MSH-3.1 / MSH-4.1; omitted matches any)."""

    sending_application: str | None = None
    sending_facility: str | None = None

    @model_validator(mode="after")
    def _something(self) -> SenderMatch:
        if self.sending_application is None and self.sending_facility is None:
            raise ValueError("give sending_application, sending_facility or both")
        return self


class SenderMap(_Strict):
    """A sender's local codes (OBX-3.1) and unit spellings (OBX-6.1)."""

    version: int
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    source: str = Field(min_length=1, description="where the sender's codes are documented")
    match: SenderMatch
    code_system: str | None = Field(None, description="system URI for its local codes (default "
                                                      "urn:iomt-fhir-hub:hl7v2:local:<MSH-4>)")
    codes: dict[str, CodeTarget] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict,
                                  description="sender unit text → UCUM code")

    _version = field_validator("version")(supported_version)


class EngineSettings(_Strict):
    """``settings.yaml``: how identifiers from PID-3/MRG-1 become FHIR identifiers."""

    version: int
    assigning_authorities: dict[str, str] = Field(
        default_factory=dict,
        description="assigning authority namespace (CX-4.1) → identifier system URI, for "
                    "authorities sent without an ISO OID")
    patient_identifier_types: list[str] = Field(
        default_factory=lambda: ["MR", "PI", "PT", "MRN"],
        description="CX-5 identifier types preferred (in order) as the subject of readings")

    _version = field_validator("version")(supported_version)
