"""The rules-file language (``mappings/rules/*.yaml``), declared once as pydantic models.

A rules file holds a ``version`` (the program version every output of its rules names), optional
``measures`` (name → the codes an Observation carries and the canonical unit) and ``rules``
(each a ``kind`` with its parameters). Files are loaded as mapping files are
(``hub.mappings.yamlfile.load_model``), so every problem is reported at once as
file:line:column. Durations are written ``90s``, ``15m``,
``24h``, ``14d`` (or a number of seconds). Per-patient overrides (``PUT /rules/overrides/...``)
are merge patches of one rule (hub/rules/overrides.py), validated by the same models; a
patient's own settings (time zone) are ``PatientSettings``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

SUPPORTED_VERSIONS = range(1, 1000)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """``"15m"`` → 900.0; a bare number is seconds. Negative or malformed values are refused."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 15m, 24h or 14d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("a duration such as 90s, 15m, 24h, 14d or 2w")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def check_zone(value: str) -> str:
    """An IANA time zone name (``Europe/Paris``, ``America/New_York``, ``UTC``)."""
    try:
        ZoneInfo(value)
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"'{value}' is not a known time zone (an IANA name such as "
                         f"America/New_York)") from None
    return value


TimeZone = Annotated[str, AfterValidator(check_zone)]
Priority = Literal["low", "medium", "high"]
NotifyOn = Literal["raise", "escalate", "resolve", "event"]
FLAG_CATEGORIES = ("clinical", "drug", "behavioral", "admin", "lab", "safety")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ZONE = ("local days are this zone's for patients without a zone of their own (default: the "
        "program's)")


class Coding(_Strict):
    """A coding added to Flag.code (e.g. a SNOMED CT concept the program agreed on)."""

    system: str
    code: str
    display: str | None = None


class Recipient(_Strict):
    """Who a Communication goes to: a FHIR reference, or a display-only reference."""

    reference: str | None = Field(None, description="e.g. CareTeam/rpm-nurses")
    display: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Recipient:
        if not self.reference and not self.display:
            raise ValueError("give a reference, a display, or both")
        return self


class Measure(_Strict):
    """What a measure name means: Observation codes (``system|code``, as Observation.code or a
    component code) and the canonical unit the value must carry; ``convert`` accepts other units
    with a factor (value x factor = canonical value)."""

    title: str
    codes: list[str] = Field(min_length=1)
    unit: str | None = Field(None, description="UCUM code; omit for coded values")
    convert: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _codes(self) -> Measure:
        for code in self.codes:
            if "|" not in code or not all(code.split("|", 1)):
                raise ValueError(f"'{code}': write a code as system|code")
        return self


class FlagSpec(_Strict):
    """How the rule's Flag looks and lives. ``resolve_after``: cleared this long → inactive."""

    category: Literal["clinical", "drug", "behavioral", "admin", "lab", "safety"] = "clinical"
    priority: Priority = "medium"
    text: str | None = Field(None, description="Flag.code.text; default: the rule's title")
    codes: list[Coding] = Field(default_factory=list)
    resolve_after: Duration = Field(86400.0, description="condition cleared this long → resolved")


class Notify(_Strict):
    """A Communication sent on a lifecycle event, at most once per ``suppress`` window."""

    to: Literal["patient", "care-team"] | Recipient = "care-team"
    category: Literal["alert", "notification", "reminder", "instruction"] = "alert"
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"
    on: list[NotifyOn] = Field(default_factory=lambda: list[NotifyOn](["raise"]))
    suppress: Duration = Field(0.0, description="no repeat of this notice within the window")
    text: str | None = Field(None, description="payload text; default: the rule's own words")


class RuleBase(_Strict):
    """Fields every rule has. ``version`` defaults to the file's ``version``."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    title: str
    version: int | None = Field(None, ge=1)
    enabled: bool = True
    source: str = Field(min_length=1, description="where the defaults come from (citation)")
    flag: FlagSpec = Field(default_factory=FlagSpec)
    notify: list[Notify] = Field(default_factory=list)


class Trigger(_Strict):
    """One limit on one measure; exactly one of below/at_or_below/above/at_or_above.

    ``clear_at`` adds hysteresis: after firing, the value must come back beyond it (at or above
    it for a low limit, at or below it for a high one) to count as cleared; between the limit
    and ``clear_at`` a reading neither fires nor clears.
    """

    measure: str
    below: float | None = None
    at_or_below: float | None = None
    above: float | None = None
    at_or_above: float | None = None
    clear_at: float | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> Trigger:
        given = [v for v in (self.below, self.at_or_below, self.above, self.at_or_above)
                 if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of below, at_or_below, above, at_or_above")
        if self.clear_at is not None:
            if self.is_low and self.clear_at < given[0]:
                raise ValueError("clear_at of a low limit must be at or above the limit")
            if not self.is_low and self.clear_at > given[0]:
                raise ValueError("clear_at of a high limit must be at or below the limit")
        return self

    @property
    def is_low(self) -> bool:
        return self.below is not None or self.at_or_below is not None

    @property
    def limit(self) -> float:
        if self.below is not None:
            return self.below
        if self.at_or_below is not None:
            return self.at_or_below
        if self.above is not None:
            return self.above
        if self.at_or_above is not None:
            return self.at_or_above
        raise AssertionError("validated: one limit is set")

    def fires(self, value: float) -> bool:
        if self.below is not None:
            return value < self.below
        if self.at_or_below is not None:
            return value <= self.at_or_below
        if self.above is not None:
            return value > self.above
        return value >= self.limit

    def cleared(self, value: float) -> bool:
        if self.clear_at is None:
            return not self.fires(value)
        return value >= self.clear_at if self.is_low else value <= self.clear_at

    def words(self) -> str:
        ops = (("below", self.below), ("at or below", self.at_or_below),
               ("above", self.above), ("at or above", self.at_or_above))
        op, value = next((o, v) for o, v in ops if v is not None)
        return f"{op} {value:g}"


class Escalation(_Strict):
    """A reading beyond any of these limits raises the Flag's priority; with ``immediate``
    (default) it also raises the Flag at once when none is active — persistence is for the
    rule's base limits, not for a value this far out."""

    priority: Priority
    any: list[Trigger] = Field(min_length=1)
    immediate: bool = True


class ThresholdRule(RuleBase):
    """Kind 1: limits with persistence (``consecutive`` readings, no gap over ``max_gap``)."""

    kind: Literal["threshold"]
    any: list[Trigger] = Field(min_length=1)
    consecutive: int = Field(1, ge=1, le=50)
    max_gap: Duration | None = Field(None, description="a longer gap restarts the count")
    escalate: list[Escalation] = Field(default_factory=list)


class WeightGainRule(RuleBase):
    """Kind 1 (heart failure): gain against the first weight of earlier days, per local calendar
    day (the patient's zone); ``day`` vs the recent weight (the median of the previous
    ``day_reference`` days' weights), ``week`` vs the lowest of the previous 7 days."""

    kind: Literal["weight-gain"]
    measure: str
    day_gain: float = Field(gt=0, description="kg vs the recent weight (median of the daily "
                                              "weights of the previous day_reference days)")
    day_reference: int = Field(1, ge=1, le=7, description="days the recent weight is taken "
                                                          "from (1: yesterday only)")
    week_gain: float = Field(gt=0, description="kg vs the lowest of the previous 7 days")
    timezone: TimeZone | None = Field(None, description=ZONE)


class BaselineRule(RuleBase):
    """Kind 2: personal baseline (median, MAD) and a sustained-deviation test."""

    kind: Literal["baseline"]
    measure: str
    window: Duration = Field(14 * 86400.0, description="baseline look-back")
    max_samples: int = Field(64, ge=8, le=512)
    session: Duration = Field(3600.0, description="readings this close are averaged as one")
    min_samples: int = Field(10, ge=3)
    min_span: Duration = Field(5 * 86400.0, description="warm-up: the samples must span this")
    recent: int = Field(2, ge=1, le=10, description="sustained: mean of the last n samples")
    k: float = Field(3.0, gt=0, description="robust SDs of that mean")
    min_delta: float = Field(gt=0, description="never fire on a smaller deviation (unit)")
    jump: float | None = Field(None, gt=0, description="one sample this far from the median "
                                                      "fires at once (unit)")
    min_sd: float = Field(gt=0, description="floor of the robust SD (unit)")
    direction: Literal["up", "down", "both"] = "both"
    accept_after: Duration = Field(7 * 86400.0, description="an active Flag this old lets the "
                                                            "baseline adopt the new level")


class SilenceRule(RuleBase):
    """Kind 4: no reading of ``measures`` (empty: any) for ``after`` → reminder; ``flag_after``
    → Flag for the care team. The next reading resolves it."""

    kind: Literal["silence"]
    measures: list[str] = Field(default_factory=list)
    after: Duration
    flag_after: Duration | None = None


class DaysWithDataRule(RuleBase):
    """Kind 4: distinct days with data in consecutive ``period`` periods (CPT 99454: ≥ 16 / 30)."""

    kind: Literal["days-with-data"]
    measures: list[str] = Field(default_factory=list)
    period_days: int = Field(30, ge=1, le=366)
    minimum: int = Field(16, ge=1)
    timezone: TimeZone | None = Field(None, description=ZONE)


class CgmTarget(_Strict):
    """A consensus target; missing it (on sufficient data) raises the rule's Flag."""

    metric: Literal["tir", "tbr_low", "tbr_very_low", "tar_high", "tar_very_high", "cv",
                    "mean", "gmi"]
    above: float | None = None
    below: float | None = None
    priority: Priority = "medium"

    @model_validator(mode="after")
    def _one(self) -> CgmTarget:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above (missed when above) or below")
        return self


class CgmRule(RuleBase):
    """Kind 5: consensus metrics over ``days`` full days, summarised daily (scheduled)."""

    kind: Literal["cgm-summary"]
    measure: str
    days: int = Field(14, ge=1, le=90)
    slot: Duration = Field(300.0, description="sensor interval; one reading counted per slot")
    min_active: float = Field(70.0, ge=0, le=100, description="% of slots needed for targets")
    targets: list[CgmTarget] = Field(default_factory=list)
    timezone: TimeZone | None = Field(None, description=ZONE)


class News2Rule(RuleBase):
    """Kind 6: NEWS2 over the vitals that arrive within ``window`` of the set's first reading."""

    kind: Literal["news2"]
    respiration_rate: str
    spo2: str
    systolic: str
    pulse: str
    temperature: str
    consciousness: str | None = Field(None, description="a coded measure; alert codes below")
    alert_codes: list[str] = Field(default_factory=list)
    oxygen: str | None = Field(None, description="a measure > 0 meaning supplemental O2")
    on_oxygen: bool | None = Field(None, description="per patient: known air (false) or O2")
    spo2_scale: Literal[1, 2] = 1
    window: Duration = Field(3600.0)
    min_parameters: int = Field(3, ge=1, le=7)
    aggregate_medium: int = 5
    aggregate_high: int = 7
    clear_on_partial: bool = True


class MedicationRule(RuleBase):
    """Kind 3: doses against a schedule with a grace window; nudge at once, Flag after
    ``flag_misses`` misses in ``flag_days`` days."""

    kind: Literal["medication-adherence"]
    measure: str = Field(description="the dose-taken event measure")
    missed_measure: str | None = Field(None, description="the bottle's own dose-missed events")
    times: list[str] = Field(default_factory=list, description="HH:MM local; per patient")
    timezone: TimeZone | None = Field(None, description=ZONE)
    grace: Duration = Field(2 * 3600.0)
    flag_misses: int = Field(3, ge=1)
    flag_days: int = Field(7, ge=1)
    medication: str | None = Field(None, description="system|code; per patient")

    @model_validator(mode="after")
    def _times(self) -> MedicationRule:
        for text in self.times:
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", text):
                raise ValueError(f"'{text}': times are HH:MM, 24-hour")
        return self


Rule = Annotated[
    ThresholdRule | WeightGainRule | BaselineRule | SilenceRule | DaysWithDataRule | CgmRule
    | News2Rule | MedicationRule,
    Field(discriminator="kind"),
]


class PatientSettings(_Strict):
    """A patient's own settings for every rule (``PUT /rules/patients/{id}/settings``)."""

    timezone: TimeZone | None = Field(None, description="the patient's IANA time zone: their "
                                                        "days, dose times and mornings")


class RulesFile(_Strict):
    """One file under mappings/rules/."""

    version: int = Field(ge=1, description="program version; outputs name it")
    description: str | None = None
    timezone: TimeZone | None = Field(None, description="the program's time zone: local days of "
                                                        "patients without one (default UTC)")
    care_team: Recipient | None = Field(None, description="who 'care-team' means (default: a "
                                                          "display-only reference)")
    measures: dict[str, Measure] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
