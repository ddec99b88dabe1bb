"""Kind 1: thresholds with persistence and hysteresis.

A sample (one Observation) *fires* when any trigger's measure is beyond its limit; it *clears*
when every trigger measure present is back beyond its ``clear_at`` (hysteresis); in between it
does neither. ``consecutive`` firing samples, none more than ``max_gap`` after the previous one,
raise the Flag at the highest priority any of them reached (``escalate`` levels); a sample
beyond an ``immediate`` escalation level raises it at once. While the
Flag is active a firing sample can only raise its priority; a clearing sample starts the
``flag.resolve_after`` clock, any other sample stops it.

State: ``streak`` {n, last, prio, values, refs} (bounded by ``consecutive``), plus the alert.
"""

from __future__ import annotations

from typing import Any

from hub.rules.kinds.base import Kind, PerRule, State, fmt, when
from hub.rules.lifecycle import Ctx
from hub.rules.model import ThresholdRule, Trigger
from hub.rules.outputs import PRIORITY_RANK, Finding
from hub.rules.readings import Sample


def _priority(rule: ThresholdRule, values: dict[str, Any]) -> tuple[str, bool]:
    """The highest priority this sample reaches, and whether that level raises at once."""
    best, immediate = rule.flag.priority, False
    for level in rule.escalate:
        if PRIORITY_RANK[level.priority] > PRIORITY_RANK[best] and any(
                isinstance(values.get(t.measure), float) and t.fires(values[t.measure])
                for t in level.any):
            best, immediate = level.priority, level.immediate
    return best, immediate


def _finding(ctx: Ctx, rule: ThresholdRule, streak: dict[str, Any]) -> Finding:
    values: list[list[Any]] = []
    words: list[str] = []
    for measure, value, limit in streak["values"]:
        title, unit = ctx.label(measure)
        values.append([title, value, unit])
        words.append(f"{title} {fmt(value, unit)} ({limit})")
    n = streak["n"]
    latest = "; ".join(words[-len(rule.any):]) if n > 1 else "; ".join(words)
    persistence = f" on {n} consecutive readings" if n > 1 else ""
    summary = (f"{rule.title}: {latest}{persistence}, latest at {when(streak['last'])}. "
               f"Rule {rule.id} v{ctx.version}.")
    return {"summary": summary, "values": values, "evidence": list(streak["refs"])}


# A trigger as the hot loop tests it: (measure, the trigger, fires: 0 below, 1 at or below,
# 2 above, 3 at or above, its limit, clears: 0 not firing, 1 at or above, 2 at or below, and
# that limit). Trigger.fires/cleared as method calls were ~40 % of a sample's cost (timeit).
_Test = tuple[str, Trigger, int, float, int, float]


def _tests(rule: ThresholdRule) -> tuple[_Test, ...]:
    found: list[_Test] = []
    for t in rule.any:
        op, limit = next((i, v) for i, v in enumerate((t.below, t.at_or_below, t.above,
                                                         t.at_or_above)) if v is not None)
        clears = 0 if t.clear_at is None else 1 if t.is_low else 2
        found.append((t.measure, t, op, limit, clears,
                      t.clear_at if t.clear_at is not None else 0.0))
    return tuple(found)


class Threshold(Kind):
    _compiled = PerRule(_tests)

    def on_sample(self, ctx: Ctx, st: State, s: Sample) -> None:
        self.on_samples(ctx, st, [s])

    def on_samples(self, ctx: Ctx, st: State, samples: list[Sample]) -> None:
        rule = ctx.rule
        assert isinstance(rule, ThresholdRule)
        tests = self._compiled(rule)
        for s in samples:
            if not s.usable:
                continue
            # fresh(st, s), written out: its call was ~1/5 of a sample's cost here
            t = s.t
            last = st.get("t")
            if last is not None and t <= last:
                if t < last:
                    continue
                refs: list[str] = st.setdefault("refs", [])
                if s.ref in refs:
                    continue
                refs.append(s.ref)
            else:
                st["t"] = t
                st["refs"] = [s.ref]
            values = s.values
            fired: list[tuple[Trigger, float]] = []
            present = False
            cleared = True
            for measure, trigger, op, limit, clears, clear_at in tests:
                value = values.get(measure)
                if not isinstance(value, float):
                    continue
                present = True
                fires = (value < limit if op == 0 else value <= limit if op == 1
                         else value > limit if op == 2 else value >= limit)
                if fires:
                    fired.append((trigger, value))
                if not (not fires if clears == 0 else value >= clear_at if clears == 1
                        else value <= clear_at):
                    cleared = False
            if not present:
                continue
            if not fired:
                st.pop("streak", None)
                alert = st.get("alert")
                if alert is not None and alert["flag"] is None:
                    continue  # no Flag: clearing or not changes nothing (the alert exists)
                if cleared:
                    ctx.clearing(st, s.t)
                else:
                    ctx.not_clear(st)
                continue
            self._fired(ctx, rule, st, s, fired)

    @staticmethod
    def _fired(ctx: Ctx, rule: ThresholdRule, st: State, s: Sample,
               fired: list[tuple[Trigger, float]]) -> None:
        streak = st.get("streak")
        if streak is None or (rule.max_gap is not None and s.t - streak["last"] > rule.max_gap):
            streak = {"n": 0, "prio": rule.flag.priority, "values": [], "refs": []}
        prio, immediate = _priority(rule, s.values)
        if PRIORITY_RANK[prio] > PRIORITY_RANK[streak["prio"]]:
            streak["prio"] = prio
        keep = rule.consecutive * len(rule.any)
        streak["n"] += 1
        streak["last"] = s.t
        fresh_values = [[t.measure, v, t.words()] for t, v in fired]
        streak["values"] = (streak["values"] + fresh_values)[-keep:]
        streak["refs"] = (streak["refs"] + [s.ref])[-rule.consecutive:]
        st["streak"] = streak
        if ctx.active(st) is not None:
            ctx.fire(st, s.t, prio, _finding(ctx, rule, streak))
        elif streak["n"] >= rule.consecutive or immediate:
            ctx.fire(st, s.t, streak["prio"], _finding(ctx, rule, streak))

    def explain(self, ctx: Ctx, st: State) -> dict[str, Any]:
        streak = st.get("streak")
        return {"firing readings in a row": streak["n"] if streak else 0,
                "needed": ctx.rule.consecutive if isinstance(ctx.rule, ThresholdRule) else None}
