"""Kind 6: NEWS2 (Royal College of Physicians, National Early Warning Score 2, 2017; chart 1
"The NEWS scoring system"), over the vitals that arrive within ``window`` of a set's first one.

Scoring is exactly the RCP chart; the chart's cut-points are integers (temperature: tenths of
a degree), so a value is first rounded half-up to that resolution (a 91.6 % SpO2 from a
converted or averaged source is 92 %) and then has exactly one score:

    parameter              3        2        1        0              1        2        3
    respiration rate /min  ≤8                9-11     12-20                   21-24    ≥25
    SpO2 scale 1 %         ≤91      92-93    94-95    ≥96
    SpO2 scale 2 %         ≤83      84-85    86-87    88-92, ≥93 air 93-94 O2  95-96 O2 ≥97 O2
    air or oxygen                   oxygen            air
    systolic BP mmHg       ≤90      91-100   101-110  111-219                           ≥220
    pulse /min             ≤40               41-50    51-90          91-110   111-130  ≥131
    consciousness                                     alert                             CVPU
    temperature °C         ≤35.0             35.1-36.0 36.1-38.0     38.1-39.0 ≥39.1

**Partial scores are explicit.** Home monitoring rarely records consciousness or oxygen
supplementation. A missing parameter is a component with ``dataAbsentReason`` not-performed,
the aggregate's ``valueQuantity.comparator`` is ``>=`` (a missing parameter can only add
points, so a partial aggregate is a lower bound — with oxygen unknown, SpO2 scale 2 scores ≥ 93
as on air, the lowest it could be), and the note names what is missing. A set is scored once it
has ``min_parameters`` parameters.

**When**: the Flag decision is taken at once on each message (a partial aggregate is a lower
bound, so it can only rise as the rest of the set arrives); the score Observation is written by
the scheduler once the set's window has closed — one complete score per set, and no
Observations written on the ingest path.

**Flag** (RCP response thresholds): aggregate ≥ ``aggregate_high`` (7) → high priority; ≥
``aggregate_medium`` (5), or any single parameter scoring 3 → the rule's priority (medium). A
later set below both clears it (``clear_on_partial``: a partial set may clear it too).

Codes: SNOMED CT UK edition concepts as UK Core uses them (UKCore-EarlyWarningTotalScore and
UKCore-EarlyWarningSubScore value sets): total 1104051000000101; sub-scores below.
"""

from __future__ import annotations

from math import floor
from typing import Any

from hub.fhir.ids import stable_id
from hub.rules import outputs
from hub.rules.kinds.base import Kind, PerRule, State, fmt, when
from hub.rules.lifecycle import Ctx
from hub.rules.model import News2Rule
from hub.rules.outputs import UCUM
from hub.rules.readings import Sample

SNOMED = "http://snomed.info/sct"
TOTAL = ("1104051000000101",
         "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score")
SUBSCORE = {
    "respiration_rate": ("1104301000000104", "Royal College of Physicians National Early "
                         "Warning Score 2 - respiration rate score"),
    "spo2_scale_1": ("1104311000000102", "Royal College of Physicians National Early Warning "
                     "Score 2 - oxygen saturation scale 1 score"),
    "spo2_scale_2": ("1104321000000108", "Royal College of Physicians National Early Warning "
                     "Score 2 - oxygen saturation scale 2 score"),
    "air_or_oxygen": ("1104331000000105", "Royal College of Physicians National Early Warning "
                      "Score 2 - air or oxygen score"),
    "systolic": ("1104341000000101", "Royal College of Physicians National Early Warning "
                 "Score 2 - systolic blood pressure score"),
    "pulse": ("1104351000000103", "Royal College of Physicians National Early Warning Score 2 "
              "- pulse score"),
    "consciousness": ("1104361000000100", "Royal College of Physicians National Early Warning "
                      "Score 2 - consciousness score"),
    "temperature": ("1104371000000107", "Royal College of Physicians National Early Warning "
                    "Score 2 - temperature score"),
}
PARAMETERS = ("respiration_rate", "spo2", "air_or_oxygen", "systolic", "pulse", "consciousness",
              "temperature")
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def _whole(value: float) -> int:
    return floor(value + 0.5)  # half-up to the chart's integer resolution


def score_respiration_rate(value: float) -> int:
    v = _whole(value)
    return 3 if v <= 8 else 1 if v <= 11 else 0 if v <= 20 else 2 if v <= 24 else 3


def score_spo2(value: float, scale: int, on_oxygen: bool | None) -> int:
    v = _whole(value)
    if scale == 1:
        return 3 if v <= 91 else 2 if v <= 93 else 1 if v <= 95 else 0
    if v <= 83:
        return 3
    if v <= 85:
        return 2
    if v <= 87:
        return 1
    if v <= 92 or not on_oxygen:  # 88-92, or >= 93 on air (unknown: as air, the lower bound)
        return 0
    return 1 if v <= 94 else 2 if v <= 96 else 3


def score_air_or_oxygen(on_oxygen: bool) -> int:
    return 2 if on_oxygen else 0


def score_systolic(value: float) -> int:
    v = _whole(value)
    return 3 if v <= 90 else 2 if v <= 100 else 1 if v <= 110 else 0 if v <= 219 else 3


def score_pulse(value: float) -> int:
    v = _whole(value)
    return 3 if v <= 40 else 1 if v <= 50 else 0 if v <= 90 else 1 if v <= 110 \
        else 2 if v <= 130 else 3


def score_consciousness(alert: bool) -> int:
    return 0 if alert else 3


def score_temperature(value: float) -> int:
    tenths = floor(value * 10 + 0.5 + 1e-9)  # half-up to 0.1 °C (the epsilon absorbs 36.05*10)
    return 3 if tenths <= 350 else 1 if tenths <= 360 else 0 if tenths <= 380 \
        else 1 if tenths <= 390 else 2


def risk(aggregate: int, any_three: bool) -> str:
    """The RCP clinical-risk band of a score."""
    if aggregate >= 7:
        return "high"
    if aggregate >= 5:
        return "medium"
    return "low-medium" if any_three else "low"


def _inputs(rule: News2Rule) -> dict[str, str | None]:
    return {"respiration_rate": rule.respiration_rate, "spo2": rule.spo2,
            "systolic": rule.systolic, "pulse": rule.pulse,
            "temperature": rule.temperature, "consciousness": rule.consciousness,
            "air_or_oxygen": rule.oxygen}


def _make_plan(rule: News2Rule) -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    """The rule's (parameter, measure) pairs, and per measure its pairs (in the pairs' order)."""
    pairs = [(p, m) for p, m in _inputs(rule).items() if m is not None]
    by_measure: dict[str, list[tuple[str, str]]] = {}
    for pair in pairs:
        by_measure.setdefault(pair[1], []).append(pair)
    return pairs, by_measure


class News2(Kind):
    _plan = PerRule(_make_plan)

    def _pairs(self, rule: News2Rule) -> list[tuple[str, str]]:
        """(parameter, measure) pairs of a rule, computed once per rule object."""
        return self._plan(rule)[0]

    def on_sample(self, ctx: Ctx, st: State, s: Sample) -> None:
        self.on_samples(ctx, st, [s])

    def on_samples(self, ctx: Ctx, st: State, samples: list[Sample]) -> None:
        # One loop for the message's samples: the rule's pairs and window read once.
        rule = ctx.rule
        assert isinstance(rule, News2Rule)
        pairs, by_measure = self._plan(rule)
        window = rule.window
        for s in samples:
            if not s.usable:
                continue
            last: dict[str, float] | None = st.get("last")
            if last is None:  # (not setdefault: its default dict would be built every time)
                last = st["last"] = {}
            values = s.values
            # The rule's pairs whose measure the sample carries, in the pairs' order: a
            # one-measure sample looks its own up instead of testing every pair (~0.2 us).
            if len(values) == 1:
                own = by_measure.get(next(iter(values)), ())
            else:
                own = [pair for pair in pairs if pair[1] in values]
            for param, measure in own:
                if last.get(param, float("-inf")) >= s.t:
                    continue  # a replay, or older than what this parameter already has
                last[param] = s.t
                vset = st.get("set")
                if vset is None or s.t - vset["start"] >= window:
                    if vset is not None:
                        if vset.pop("dirty", False):
                            self._judge(ctx, rule, st, vset)
                        self._close(st, vset)
                    vset = st["set"] = {"start": s.t, "params": {}}
                vset["params"][param] = [values[measure], s.t, s.ref]
                vset["dirty"] = True

    def flush(self, ctx: Ctx, st: State) -> None:
        rule = ctx.rule
        assert isinstance(rule, News2Rule)
        vset = st.get("set")
        if vset is not None and vset.pop("dirty", False):
            self._judge(ctx, rule, st, vset)

    @staticmethod
    def _close(st: State, vset: dict[str, Any]) -> None:
        """A set whose window is over waits for the scheduler to write its Observation (so the
        ingest path writes no Observations, and each set's score is written once, complete)."""
        closed: list[dict[str, Any]] = st.setdefault("closed", [])
        closed.append(vset)
        del closed[:-24]
        st.pop("set", None)

    def on_tick(self, ctx: Ctx, st: State, now: float) -> None:
        rule = ctx.rule
        assert isinstance(rule, News2Rule)
        ctx.settle(st, now)
        vset = st.get("set")
        if vset is not None and now >= vset["start"] + rule.window:
            if vset.pop("dirty", False):
                self._judge(ctx, rule, st, vset)
            self._close(st, vset)
        for done in st.pop("closed", []):
            scored = self._score(ctx, rule, done)
            if scored is not None:
                ctx.emit(self._observation(ctx, rule, done, scored))

    def due(self, ctx: Ctx, st: State) -> float | None:
        rule = ctx.rule
        assert isinstance(rule, News2Rule)
        # The earliest of the Flag's, the open set's and the last closed set's times (the
        # first of equal ones, as min() of them in this order), without building the list.
        due = ctx.due(st)
        vset = st.get("set")
        if vset is not None:
            at = vset["start"] + rule.window
            if due is None or at < due:
                due = at
        closed = st.get("closed")
        if closed:
            at = closed[-1]["start"] + rule.window
            if due is None or at < due:
                due = at
        return due

    def _judge(self, ctx: Ctx, rule: News2Rule, st: State, vset: dict[str, Any]) -> None:
        """Flag decisions at once, on the set as it stands (a partial aggregate is a lower
        bound, so waiting for the rest of the set could only raise it)."""
        # Judged on the sub-scores alone; the set's full scoring (times, references, what is
        # missing) only when a Flag fires or may resolve: it was most of a one-reading
        # message's NEWS2 cost (the same decisions: aggregate, any 3, partial or not).
        params: dict[str, list[Any]] = vset["params"]
        scores = self._scores(rule, params)
        if len(scores) < rule.min_parameters:
            return
        aggregate = sum(scores.values())
        any_three = any(v == 3 for v in scores.values())
        if aggregate >= rule.aggregate_high or aggregate >= rule.aggregate_medium or any_three:
            scored = self._score(ctx, rule, vset, words=False)
            assert scored is not None
            t = scored["t"]
            if aggregate >= rule.aggregate_high:
                ctx.fire(st, t, "high", self._words(ctx, rule, vset, scored))
            else:
                ctx.fire(st, t, rule.flag.priority, self._words(ctx, rule, vset, scored))
            return
        alert = st.get("alert")
        if alert is not None and alert["flag"] is None:
            return  # no Flag: not_clear or clearing would change nothing
        if len(scores) < len(PARAMETERS) and not rule.clear_on_partial:
            ctx.not_clear(st)
        else:
            ctx.clearing(st, max(v[1] for v in params.values()))

    def _score(self, ctx: Ctx, rule: News2Rule, vset: dict[str, Any], *, words: bool = True
               ) -> dict[str, Any] | None:
        """The set's sub-scores and aggregate (None below ``min_parameters``); with ``words``,
        the finding too (its text is only needed when a Flag fires or a score is written)."""
        params: dict[str, list[Any]] = vset["params"]
        scores = self._scores(rule, params)
        if len(scores) < rule.min_parameters:
            return None
        aggregate = sum(scores.values())
        missing = [p for p in PARAMETERS if p not in scores]
        any_three = any(v == 3 for v in scores.values())
        t = max(v[1] for v in params.values())
        refs = [v[2] for v in params.values()]
        scored = {"scores": scores, "aggregate": aggregate, "missing": missing,
                  "any_three": any_three, "t": t, "refs": refs}
        if words:
            scored["finding"] = self._words(ctx, rule, vset, scored)
        return scored

    @staticmethod
    def _scores(rule: News2Rule, params: dict[str, list[Any]]) -> dict[str, int]:
        """The set's sub-score per parameter (air or oxygen included when known)."""
        on_oxygen: bool | None = rule.on_oxygen
        if "air_or_oxygen" in params:
            on_oxygen = float(params["air_or_oxygen"][0]) > 0
        scores: dict[str, int] = {}
        for param, (value, _, _) in params.items():
            if param == "respiration_rate":
                scores[param] = score_respiration_rate(float(value))
            elif param == "spo2":
                scores[param] = score_spo2(float(value), rule.spo2_scale, on_oxygen)
            elif param == "systolic":
                scores[param] = score_systolic(float(value))
            elif param == "pulse":
                scores[param] = score_pulse(float(value))
            elif param == "temperature":
                scores[param] = score_temperature(float(value))
            elif param == "consciousness":
                scores[param] = score_consciousness(str(value) in rule.alert_codes)
        if on_oxygen is not None:
            scores["air_or_oxygen"] = score_air_or_oxygen(on_oxygen)
        return scores

    def _words(self, ctx: Ctx, rule: News2Rule, vset: dict[str, Any], scored: dict[str, Any]
               ) -> dict[str, Any]:
        return self._finding(ctx, rule, vset["params"], scored["scores"], scored["aggregate"],
                             scored["missing"], scored["any_three"], scored["t"],
                             scored["refs"])

    def _finding(self, ctx: Ctx, rule: News2Rule, params: dict[str, list[Any]],
                 scores: dict[str, int], aggregate: int, missing: list[str], any_three: bool,
                 t: float, refs: list[str]) -> dict[str, Any]:
        inputs = _inputs(rule)
        parts: list[str] = []
        values: list[list[Any]] = []
        for param in PARAMETERS:
            if param not in scores:
                continue
            measure = inputs.get(param)
            if param in params and measure is not None:
                title, unit = ctx.label(measure)
                raw = params[param][0]
                shown = fmt(float(raw), unit) if isinstance(raw, float) else str(raw)
                values.append([title, raw, unit])
                parts.append(f"{title} {shown} ({scores[param]})")
            else:
                parts.append(f"air/oxygen: {'oxygen' if scores[param] else 'air'} "
                             f"({scores[param]})")
        partial = (f"partial: {', '.join(p.replace('_', ' ') for p in missing)} not recorded,"
                   f" so the aggregate is a lower bound" if missing else "complete")
        summary = (f"NEWS2 {'≥ ' if missing else ''}{aggregate} ({partial}); clinical risk "
                   f"{risk(aggregate, any_three)}{' (a parameter scored 3)' if any_three else ''}"
                   f": {'; '.join(parts)}; at {when(t)}. Rule {rule.id} v{ctx.version}.")
        values.append(["NEWS2 aggregate", aggregate, "{score}"])
        return {"summary": summary, "values": values, "evidence": refs}

    def _observation(self, ctx: Ctx, rule: News2Rule, vset: dict[str, Any],
                     scored: dict[str, Any]) -> dict[str, Any]:
        scores: dict[str, int] = scored["scores"]
        aggregate, missing, t, refs, finding = (scored["aggregate"], scored["missing"],
                                                scored["t"], scored["refs"], scored["finding"])
        components: list[dict[str, Any]] = []
        for param in PARAMETERS:
            key = param if param != "spo2" else f"spo2_scale_{rule.spo2_scale}"
            code, display = SUBSCORE[key]
            component: dict[str, Any] = {
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]}}
            if param in scores:
                component["valueQuantity"] = {"value": scores[param], "unit": "{score}",
                                              "system": UCUM, "code": "{score}"}
            else:
                component["dataAbsentReason"] = {
                    "coding": [{"system": DATA_ABSENT, "code": "not-performed",
                                "display": "Not Performed"}],
                    "text": "not recorded in this set of vitals"}
            components.append(component)
        value: dict[str, Any] = {"value": aggregate, "unit": "{score}", "system": UCUM,
                                 "code": "{score}"}
        if missing:
            value["comparator"] = ">="
        return outputs.derived_observation(
            oid=stable_id("Observation", ctx.patient, rule.id, outputs.iso(vset["start"])),
            patient=ctx.patient, rule_id=rule.id, version=ctx.version, status="final",
            category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                             "observation-category", "code": "survey",
                                   "display": "Survey"}]}],
            code={"coding": [{"system": SNOMED, "code": TOTAL[0], "display": TOTAL[1]}],
                  "text": "NEWS2 total score" + (" (partial)" if missing else "")},
            finding=finding, effectiveDateTime=outputs.iso(t), valueQuantity=value,
            note=[{"text": finding["summary"]}],
            derivedFrom=[{"reference": ref} for ref in refs], component=components)

    def explain(self, ctx: Ctx, st: State) -> dict[str, Any]:
        vset = st.get("set")
        if vset is None:
            return {"last set": "none"}
        return {"last set": f"started {when(vset['start'])}, parameters "
                            + ", ".join(sorted(vset["params"]))}
