"""Kind 2: a personal baseline per patient and measure, and a sustained-deviation test.

- **Samples**: readings within ``session`` of a session's first reading are averaged into one
  sample (a patient taking three cuff readings a minute apart is one measurement), so a dense
  stream cannot crowd out the window and a session costs one update.
- **Baseline**: median and MAD of the admitted samples of the last ``window`` (at most
  ``max_samples``), recomputed once per closed session (constant work: ≤ ``max_samples`` values).
  Robust SD = max(``min_sd``, 1.4826 x MAD) (1.4826 makes the MAD consistent with the SD of a
  normal distribution; Rousseeuw & Croux, JASA 1993). No firing before ``min_samples`` samples
  spanning ``min_span`` (warm-up).
- **Sustained deviation**: the mean of the last ``recent`` samples differs from the median by at
  least max(``min_delta``, ``k`` x SD / √recent), in the rule's ``direction``, and every one of
  those samples is at least half that limit out on the same side (one spike cannot carry it).
  Optionally (``jump``) a single sample at least max(``jump``, ``k`` x SD) out fires at once:
  a step that large needs no confirmation to deserve a look.
- **Adapts slowly, ignores what it flags**: a held/implausible reading never reaches a rule; a
  session that deviates by max(``min_delta``, ``k`` x SD) or that fired is *not* admitted, so an
  excursion cannot drag the baseline towards itself. Once a Flag has been active for
  ``accept_after``, sessions are admitted again: the baseline moves to the new level over the
  following days, the deviation clears and the Flag resolves (``flag.resolve_after`` later).
- **A change of direction is a new episode**: a Flag raised for a fall ends (inactive, at that
  reading) when a rise fires, and a new Flag with its own notices says so — one active Flag per
  rule would otherwise absorb the second finding silently.
"""

from __future__ import annotations

from math import sqrt
from typing import Any

from hub.rules.kinds.base import Kind, State, fmt, when
from hub.rules.lifecycle import Ctx
from hub.rules.model import BaselineRule
from hub.rules.readings import Sample

MAD_TO_SD = 1.4826


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def baseline_stats(buf: list[list[float]]) -> list[float]:
    """[median, MAD, count, span in seconds] of the admitted samples ``[[t, value], ...]``."""
    values = [v for _, v in buf]
    med = _median(values)
    mad = _median([abs(v - med) for v in values])
    return [med, mad, float(len(values)), buf[-1][0] - buf[0][0]]


class Baseline(Kind):
    def on_sample(self, ctx: Ctx, st: State, s: Sample) -> None:
        self.on_samples(ctx, st, [s])

    def on_samples(self, ctx: Ctx, st: State, samples: list[Sample]) -> None:
        # One loop for the message's samples: the rule's fields read once, not per sample.
        rule = ctx.rule
        assert isinstance(rule, BaselineRule)
        measure, session = rule.measure, rule.session
        min_samples, min_span = rule.min_samples, rule.min_span
        for s in samples:
            value = s.values.get(measure)
            if not isinstance(value, float) or not s.usable:
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
            sess = st.get("sess")
            if sess is not None and s.t - sess[0] < session:
                sess[1] += value
                sess[2] += 1
                if len(sess[3]) < 3:
                    sess[3].append(s.ref)
            else:
                if sess is not None:
                    self._close(ctx, rule, st, sess)
                sess = st["sess"] = [s.t, value, 1, [s.ref]]
            stats = st.get("stats")
            if stats is None or stats[2] < min_samples or stats[3] < min_span:
                st["dev"] = False  # warming up: what _evaluate does, without the call
                continue
            self._evaluate(ctx, rule, st, sess, s.t)

    def _close(self, ctx: Ctx, rule: BaselineRule, st: State, sess: list[Any]) -> None:
        mean = sess[1] / sess[2]
        recent: list[list[Any]] = st.setdefault("recent", [])
        recent.append([sess[0], mean, sess[3]])
        del recent[:-max(rule.recent - 1, 0) or len(recent)]
        flag = ctx.active(st)
        adopting = flag is not None and sess[0] - flag["start"] >= rule.accept_after
        if st.get("dev") and not adopting:
            st["excluded"] = st.get("excluded", 0) + 1
            return
        buf: list[list[float]] = st.setdefault("buf", [])
        buf.append([sess[0], mean])
        horizon = sess[0] - rule.window
        while buf and (buf[0][0] <= horizon or len(buf) > rule.max_samples):
            buf.pop(0)
        st["stats"] = baseline_stats(buf)

    def _evaluate(self, ctx: Ctx, rule: BaselineRule, st: State, sess: list[Any],
                  t: float) -> None:
        stats = st.get("stats")
        st["dev"] = False
        if stats is None or stats[2] < rule.min_samples or stats[3] < rule.min_span:
            return
        med, mad = stats[0], stats[1]
        sd = max(rule.min_sd, MAD_TO_SD * mad)
        current = sess[1] / sess[2]
        single_limit = max(rule.min_delta, rule.k * sd)
        st["dev"] = abs(current - med) >= single_limit
        # one measurement this far out needs no second one
        jumped = rule.jump is not None and abs(current - med) >= max(rule.jump, single_limit)
        recent = [] if jumped or rule.recent == 1 else st.get("recent", [])[-(rule.recent - 1):]
        means = [m for _, m, _ in recent] + [current]
        if not jumped and len(means) < rule.recent:
            return
        limit = max(rule.min_delta, rule.k * sd / sqrt(len(means)))
        delta = sum(means) / len(means) - med
        half = limit / 2  # sustained: every sample at least half the limit out, same side
        up = delta >= limit and all(m - med >= half for m in means) and rule.direction != "down"
        down = -delta >= limit and all(med - m >= half for m in means) \
            and rule.direction != "up"
        if up or down:
            st["dev"] = True
            side = "up" if up else "down"
            if ctx.active(st) is not None and st.get("side", side) != side:
                # a deviation the other way is another finding, not more of the same: that
                # episode ends here and a new Flag says what is happening now
                ctx.new_finding(st, t)
            st["side"] = side
            ctx.fire(st, t, rule.flag.priority,
                     self._finding(ctx, rule, stats, sd, means, limit, recent, sess, t))
        elif abs(delta) < limit / 2:
            ctx.clearing(st, t)  # hysteresis: clear only well inside the limit
        else:
            ctx.not_clear(st)

    @staticmethod
    def _finding(ctx: Ctx, rule: BaselineRule, stats: list[float], sd: float,
                 means: list[float], limit: float, recent: list[list[Any]], sess: list[Any],
                 t: float) -> dict[str, Any]:
        title, unit = ctx.label(rule.measure)
        mean = sum(means) / len(means)
        delta = mean - stats[0]
        word = "above" if delta > 0 else "below"
        days = stats[3] / 86400
        method = (f"median and MAD of {stats[2]:.0f} samples over {days:.1f} days (window "
                  f"{rule.window / 86400:g} d); robust SD = max({rule.min_sd:g}, 1.4826 x MAD "
                  f"{stats[1]:.1f}) = {sd:.1f}; limit = max({rule.min_delta:g}, {rule.k:g} x SD"
                  f" / sqrt({len(means)})) = {limit:.1f} {unit or ''}".rstrip())
        what = f"mean of the last {len(means)} measurements" if len(means) > 1 else \
            "the latest measurement (a step past the rule's jump limit)"
        summary = (f"{title}: {what} {fmt(mean, unit)} is "
                   f"{fmt(abs(delta), unit)} {word} this patient's baseline "
                   f"{fmt(stats[0], unit)} (limit {fmt(limit, unit)}), latest at {when(t)}. "
                   f"Rule {rule.id} v{ctx.version}.")
        refs = [ref for _, _, refs in recent for ref in refs] + list(sess[3])
        return {"summary": summary, "values": [[f"{title} (recent mean)", mean, unit]],
                "baseline": [[f"{title} baseline median", stats[0], unit],
                             [f"{title} baseline robust SD", sd, unit]],
                "method": method, "evidence": refs[-6:]}

    def explain(self, ctx: Ctx, st: State) -> dict[str, Any]:
        rule = ctx.rule
        assert isinstance(rule, BaselineRule)
        stats = st.get("stats")
        title, unit = ctx.label(rule.measure)
        if stats is None:
            return {"baseline": f"{title}: no samples yet"}
        warm = stats[2] >= rule.min_samples and stats[3] >= rule.min_span
        return {"baseline": f"{title}: median {fmt(stats[0], unit)}, MAD {stats[1]:.1f}, "
                            f"{stats[2]:.0f} samples over {stats[3] / 86400:.1f} d"
                            + ("" if warm else f" (warming up: needs {rule.min_samples} "
                                                f"samples over {rule.min_span / 86400:g} d)"),
                "excluded sessions": st.get("excluded", 0)}
