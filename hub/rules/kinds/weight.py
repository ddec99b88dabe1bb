"""Kind 1 (heart failure): rapid weight gain, as patient self-care guidance states it.

Guidance (cited in mappings/rules/heart-failure.yaml) tells patients to weigh each morning and
to call when they gain 2-3 lb in a day or 5 lb in a week. So the rule takes the *first* usable
weight of each local calendar day (the patient's time zone) as that day's weight and compares
it with:

- the patient's *recent* weight (``day_gain``): the median of the daily weights of the
  ``day_reference`` days before (yesterday, the day before, ...; the ones that were weighed).
  One noisy weighing yesterday cannot fake or hide a gain, a skipped weighing does not leave
  the day without a reference, and an overnight gain the first day's noise hid is still found
  the next morning (the reference is still the weight before the gain);
- the lowest daily weight of the 7 days before (``week_gain``): a 5 lb rise within the week,
  whichever day it started from.

Later readings of a day do not move the rule (a weight after breakfast is not a morning
weight). State: the daily weights of the last 8 days (bounded), plus the alert. The Flag
clears when a day is below both limits.
"""

from __future__ import annotations

from typing import Any

from hub.rules.kinds.base import Kind, State, day_text, fmt, fresh, local_day
from hub.rules.lifecycle import Ctx
from hub.rules.model import WeightGainRule
from hub.rules.readings import Sample


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _gain(value: float, reference: float) -> float:
    """``value - reference`` without binary floating-point residue: 79.0 - 76.7 is
    2.2999999999999972 in floats, which must meet a 2.3 kg limit as the scale's numbers do."""
    return round(value - reference, 6)


class WeightGain(Kind):
    def on_sample(self, ctx: Ctx, st: State, s: Sample) -> None:
        rule = ctx.rule
        assert isinstance(rule, WeightGainRule)
        value = s.values.get(rule.measure)
        if not isinstance(value, float) or not s.usable or not fresh(st, s):
            return
        day = local_day(s.t, ctx.tz)
        days: dict[str, list[Any]] = st.setdefault("days", {})
        if str(day) in days:
            return  # not the first weight of the day
        days[str(day)] = [value, s.ref]
        for key in [k for k in days if int(k) < day - 7]:
            del days[key]
        title, unit = ctx.label(rule.measure)
        problems: list[str] = []
        values: list[list[Any]] = [[f"{title} on {day_text(day)}", value, unit]]
        evidence = [s.ref]
        recent = [(d, days[str(d)]) for d in range(day - rule.day_reference, day)
                  if str(d) in days]
        if recent:
            reference = _median([w[0] for _, w in recent])
            gain = _gain(value, reference)
            shown = ", ".join(f"{fmt(w[0], unit)} on {day_text(d)}" for d, w in recent)
            label = "recent weight" if len(recent) > 1 else "previous weight"
            values.append([f"{title} {label} (median)" if len(recent) > 1
                           else f"{title} on {day_text(recent[0][0])}", reference, unit])
            if gain >= rule.day_gain:
                problems.append(f"up {fmt(gain, unit)} on the {label} {fmt(reference, unit)} "
                                f"({'median of ' if len(recent) > 1 else ''}{shown}; limit "
                                f"{fmt(rule.day_gain, unit)} in a day)")
                evidence.extend(w[1] for _, w in recent)
        week = [(days[str(d)][0], d, days[str(d)][1]) for d in range(day - 7, day)
                if str(d) in days]
        if week:
            low, low_day, low_ref = min(week)
            gain = _gain(value, low)
            if gain >= rule.week_gain:
                problems.append(f"up {fmt(gain, unit)} on the week's lowest ({fmt(low, unit)} on "
                                f"{day_text(low_day)}; limit {fmt(rule.week_gain, unit)} in a "
                                f"week)")
                values.append([f"{title} lowest of the previous 7 days", low, unit])
                if low_ref not in evidence:
                    evidence.append(low_ref)
        if problems:
            summary = (f"{rule.title}: {title} {fmt(value, unit)} on {day_text(day)}, "
                       + " and ".join(problems) + f". Rule {rule.id} v{ctx.version}.")
            ctx.fire(st, s.t, rule.flag.priority,
                     {"summary": summary, "values": values, "evidence": evidence})
        else:
            ctx.clearing(st, s.t)

    def explain(self, ctx: Ctx, st: State) -> dict[str, Any]:
        days = st.get("days", {})
        _, unit = ctx.label(getattr(ctx.rule, "measure", ""))
        return {"daily weights": {day_text(int(k)): fmt(v[0], unit) for k, v in
                                  sorted(days.items())}}
