"""Kind 5: CGM consensus metrics over the last ``days`` full days, as the HL7 CGM IG codes them.

Metrics (Battelino T. et al., "Clinical Targets for Continuous Glucose Monitoring Data
Interpretation: Recommendations From the International Consensus on Time in Range", Diabetes
Care 2019;42:1593-1603): time below range < 54 mg/dL (very low) and 54-69 (low), time in range
70-180, time above range 181-250 (high) and > 250 (very high), mean glucose, coefficient of
variation (SD / mean), days of wear and % of time the sensor was active; glucose management
indicator GMI (%) = 3.31 + 0.02392 x mean glucose in mg/dL (Bergenstal R.M. et al., Diabetes
Care 2018;41:2275-2280). Readings in mmol/L are converted by the measure (x 18.0156).

Constant work per reading: one bit in the day's slot bitmap (one reading per ``slot``, so a
replayed or duplicated reading is never counted twice), one of five range counters, a sum and
a sum of squares. State keeps ``days`` + 1 days. A percentage is of the readings counted
(one per slot); % active is counted slots / possible slots (288 a day at 5 minutes).

Daily (scheduled at each local midnight) the summary of the ``days`` days before it is written
as the IG's CGM Summary Observation (code ``cgm-summary``) with ``hasMember`` references to
Mean Glucose (97507-8), Times in Ranges (106793-3, components 104642-4 very low, 104641-6 low,
97510-2 target, 104640-8 high, 104639-0 very high), GMI (97506-0), CV (104638-2), Days of Wear
(104636-6) and Sensor Active % (104637-4), each with its IG profile (http://hl7.org/fhir/uv/cgm,
input/fsh/profiles.fsh). Targets are only judged when % active ≥ ``min_active`` (the
consensus asks for ≥ 70 % of 14 days); missed targets raise the rule's Flag.
"""

from __future__ import annotations

from math import sqrt
from typing import Any

from hub.fhir.ids import stable_id
from hub.rules import outputs
from hub.rules.kinds.base import Kind, State, cached_day, day_start, day_text, local_day
from hub.rules.lifecycle import Ctx
from hub.rules.model import CgmRule
from hub.rules.outputs import PRIORITY_RANK, UCUM
from hub.rules.readings import Sample

LOINC = "http://loinc.org"
IG = "http://hl7.org/fhir/uv/cgm/StructureDefinition/"
SUMMARY_CODE = {"system": "http://hl7.org/fhir/uv/cgm/CodeSystem/cgm-summary-codes-temporary",
                "code": "cgm-summary", "display": "CGM Summary Report"}
RANGES = (  # (metric, LOINC, display as published on the IG's example pages)
    ("tbr_very_low", "104642-4",
     "Time below range, very low in Reporting Period Interstitial fluid by calculation"),
    ("tbr_low", "104641-6",
     "Time below range, low in Reporting Period Interstitial fluid by calculation"),
    ("tir", "97510-2",
     "Glucose measurements in range out of Total glucose measurements during reporting period"),
    ("tar_high", "104640-8",
     "Time above range, high in Reporting Period Interstitial fluid by calculation"),
    ("tar_very_high", "104639-0",
     "Time above range, very high in Reporting Period Interstitial fluid by calculation"),
)
LABORATORY = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                     "observation-category", "code": "laboratory",
                           "display": "Laboratory"}]}]
WORDS = {"tir": "time in range 70-180 mg/dL", "tbr_low": "time below range 54-69 mg/dL",
         "tbr_very_low": "time below 54 mg/dL", "tar_high": "time above range 181-250 mg/dL",
         "tar_very_high": "time above 250 mg/dL", "cv": "coefficient of variation",
         "mean": "mean glucose", "gmi": "GMI"}


def band(mg_dl: float) -> int:
    """0 very low (< 54), 1 low (54-69), 2 in range (70-180), 3 high (181-250), 4 very high."""
    if mg_dl < 54:
        return 0
    if mg_dl < 70:
        return 1
    if mg_dl <= 180:
        return 2
    return 3 if mg_dl <= 250 else 4


def possible_slots(first: int, last: int, tz: str, slot: float) -> int:
    """Sensor slots in local days ``first``..``last`` (a daylight-saving day has 276 or 300
    five-minute slots, not 288)."""
    return int((day_start(last + 1, tz) - day_start(first, tz)) // slot)


def metrics(days: list[list[Any]], possible: int) -> dict[str, float] | None:
    """The consensus metrics of day records ``[bits_hex, c0..c4, sum, sumsq]`` against
    ``possible`` sensor slots in the period; None if empty."""
    counts = [0] * 5
    total = sumsq = 0.0
    worn = 0
    for record in days:
        for i in range(5):
            counts[i] += record[1 + i]
        total += record[6]
        sumsq += record[7]
        worn += 1 if any(record[1:6]) else 0
    n = sum(counts)
    if n == 0:
        return None
    mean = total / n
    sd = sqrt(max(0.0, sumsq / n - mean * mean))
    return {
        "n": n, "mean": mean, "sd": sd, "cv": 100 * sd / mean, "gmi": 3.31 + 0.02392 * mean,
        "tbr_very_low": 100 * counts[0] / n, "tbr_low": 100 * counts[1] / n,
        "tir": 100 * counts[2] / n, "tar_high": 100 * counts[3] / n,
        "tar_very_high": 100 * counts[4] / n,
        "days_worn": worn, "active": 100 * n / possible,
    }


def _pct(value: float) -> dict[str, Any]:
    return {"value": round(value, 2), "unit": "%", "system": UCUM, "code": "%"}


class Cgm(Kind):
    def on_sample(self, ctx: Ctx, st: State, s: Sample) -> None:
        rule = ctx.rule
        assert isinstance(rule, CgmRule)
        value = s.values.get(rule.measure)
        if not isinstance(value, float) or not s.usable:
            return
        ordinal, start = cached_day(st, s.t, ctx.tz)
        days: dict[str, list[Any]] = st.setdefault("days", {})
        newest = max(ordinal, st.get("newest", ordinal))
        if ordinal <= newest - rule.days - 1:
            return  # older than any summary still to come
        record = days.get(str(ordinal))
        if record is None:
            record = days[str(ordinal)] = ["0", 0, 0, 0, 0, 0, 0.0, 0.0]
        bit = 1 << int((s.t - start) // rule.slot)
        bits = int(record[0], 16)
        if bits & bit:
            return  # this slot is counted already (a replay, or a second reading in it)
        record[0] = format(bits | bit, "x")
        record[1 + band(value)] += 1
        record[6] += value
        record[7] += value * value
        if newest != st.get("newest"):
            st["newest"] = newest
            for key in [k for k in days if int(k) <= newest - rule.days - 1]:
                del days[key]

    def due(self, ctx: Ctx, st: State) -> float | None:
        rule = ctx.rule
        assert isinstance(rule, CgmRule)
        days = st.get("days")
        if not days:
            return ctx.due(st)
        first = min(int(k) for k in days)
        nxt = max(st.get("summarised", first) + 1, first + 1)
        if nxt - rule.days > st.get("newest", first):
            return ctx.due(st)  # no data left in the next period
        own = day_start(nxt, ctx.tz)
        alert = ctx.due(st)
        return own if alert is None else min(own, alert)

    def on_tick(self, ctx: Ctx, st: State, now: float) -> None:
        rule = ctx.rule
        assert isinstance(rule, CgmRule)
        ctx.settle(st, now)
        days = st.get("days")
        if not days:
            return
        today = local_day(now, ctx.tz)
        if today <= st.get("summarised", min(int(k) for k in days)):
            return
        st["summarised"] = today
        period = [days[str(d)] for d in range(today - rule.days, today) if str(d) in days]
        found = metrics(period, possible_slots(today - rule.days, today - 1, ctx.tz, rule.slot))
        if found is None:
            return
        start, end = today - rule.days, today - 1
        self._emit(ctx, rule, found, start, end)
        self._judge(ctx, rule, st, found, start, end, day_start(today, ctx.tz))

    def _judge(self, ctx: Ctx, rule: CgmRule, st: State, found: dict[str, float], start: int,
               end: int, t: float) -> None:
        if found["active"] < rule.min_active:
            return  # too little data to judge the targets either way
        missed = [target for target in rule.targets
                  if (target.above is not None and found[target.metric] > target.above)
                  or (target.below is not None and found[target.metric] < target.below)]
        if not missed:
            ctx.clearing(st, t)
            return
        priority = max((m.priority for m in missed), key=lambda p: PRIORITY_RANK[p])
        words = [f"{WORDS[m.metric]} {found[m.metric]:.2f}"
                 f"{'' if m.metric in ('mean',) else ' %'} (target "
                 f"{'<' if m.above is not None else '>'} "
                 f"{m.above if m.above is not None else m.below:g})" for m in missed]
        summary = (f"{rule.title}: {'; '.join(words)} over {day_text(start)} to {day_text(end)}"
                   f" ({found['active']:.1f} % sensor active). Rule {rule.id} v{ctx.version}.")
        summary_ref = "Observation/" + stable_id("Observation", ctx.patient, rule.id,
                                                 "summary", day_text(end))
        ctx.fire(st, t, priority, {
            "summary": summary, "evidence": [summary_ref],
            "values": [[WORDS[m.metric], round(found[m.metric], 2),
                        "mg/dL" if m.metric == "mean" else "%"] for m in missed]})

    def _emit(self, ctx: Ctx, rule: CgmRule, found: dict[str, float], start: int,
              end: int) -> None:
        period = {"start": day_text(start), "end": day_text(end)}
        judged = found["active"] >= rule.min_active
        summary = (f"CGM {day_text(start)} to {day_text(end)}: TIR {found['tir']:.2f} %, TBR "
                   f"<54 {found['tbr_very_low']:.2f} %, 54-69 {found['tbr_low']:.2f} %, TAR "
                   f"181-250 {found['tar_high']:.2f} %, >250 {found['tar_very_high']:.2f} %, mean"
                   f" {found['mean']:.1f} mg/dL, GMI {found['gmi']:.1f} %, CV {found['cv']:.1f} %"
                   f", {found['days_worn']} days worn, {found['active']:.1f} % active"
                   + ("" if judged else f" (below {rule.min_active:g} % active: targets not "
                                        f"judged)") + f". Rule {rule.id} v{ctx.version}.")
        finding = {"summary": summary, "values": [], "evidence": []}

        def member(key: str, profile: str, code: dict[str, Any], **fields: Any) -> str:
            oid = stable_id("Observation", ctx.patient, rule.id, key, day_text(end))
            res = outputs.derived_observation(
                oid=oid, patient=ctx.patient, rule_id=rule.id, version=ctx.version,
                status="final", category=LABORATORY, code=code, finding=finding,
                effectivePeriod=period, **fields)
            res["meta"]["profile"] = [IG + profile]
            ctx.emit(res)
            return f"Observation/{oid}"

        def loinc(code: str, text: str) -> dict[str, Any]:
            return {"coding": [{"system": LOINC, "code": code}], "text": text}

        members = [
            member("mean", "cgm-summary-mean-glucose-mass-per-volume",
                   loinc("97507-8", "Mean glucose"),
                   valueQuantity={"value": round(found["mean"], 1), "unit": "mg/dl",
                                  "system": UCUM, "code": "mg/dL"}),
            member("ranges", "cgm-summary-times-in-ranges",
                   loinc("106793-3", "Times in ranges"),
                   component=[{"code": {"coding": [{"system": LOINC, "code": code,
                                                    "display": display}]},
                               "valueQuantity": _pct(found[metric])}
                              for metric, code, display in RANGES]),
            member("gmi", "cgm-summary-gmi", loinc("97506-0", "Glucose management indicator"),
                   valueQuantity=_pct(found["gmi"])),
            member("cv", "cgm-summary-coefficient-of-variation",
                   loinc("104638-2", "Coefficient of variation of glucose"),
                   valueQuantity=_pct(found["cv"])),
            member("wear", "cgm-summary-days-of-wear", loinc("104636-6", "Days of wear"),
                   valueQuantity={"value": found["days_worn"], "unit": "days", "system": UCUM,
                                  "code": "d"}),
            member("active", "cgm-summary-sensor-active-percentage",
                   loinc("104637-4", "Sensor active percentage"),
                   valueQuantity=_pct(found["active"])),
        ]
        member("summary", "cgm-summary", {"coding": [dict(SUMMARY_CODE)], "text": "CGM summary"},
               hasMember=[{"reference": ref} for ref in members], note=[{"text": summary}])

    def explain(self, ctx: Ctx, st: State) -> dict[str, Any]:
        rule = ctx.rule
        assert isinstance(rule, CgmRule)
        days = st.get("days", {})
        newest = st.get("newest")
        if newest is None:
            return {"cgm": "no readings yet"}
        period = [days[str(d)] for d in range(newest - rule.days + 1, newest + 1)
                  if str(d) in days]
        found = metrics(period, possible_slots(newest - rule.days + 1, newest, ctx.tz,
                                               rule.slot))
        if found is None:
            return {"cgm": "no readings in the last period"}
        return {"cgm (last days incl. today)": f"TIR {found['tir']:.1f} %, TBR<54 "
                                               f"{found['tbr_very_low']:.1f} %, mean "
                                               f"{found['mean']:.0f} mg/dL, "
                                               f"{found['active']:.0f} % active"}
