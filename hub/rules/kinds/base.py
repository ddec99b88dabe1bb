"""What every rule kind implements, and the helpers they share.

A kind is stateless code; its state is the JSON dict of one (patient, rule) row of
``rule_state``, and ``ctx.rule`` is the rule as it applies to that patient (overrides merged).

- ``on_sample``: constant work per reading (no history reads; the state is the history).
  ``on_samples``: one message's samples in turn (the engine's entry point; by default
  ``on_sample`` each).
- ``flush``: once per evaluation, after the samples (outputs that summarise several readings,
  e.g. a NEWS2 set or a days-with-data count, are built once, not per reading).
- ``on_tick``: a scheduled check at ``now`` (missed doses, silence, daily summaries, resolving
  a Flag that has been clear long enough). ``due`` says when the next one is needed.
- ``explain``: the state in words and numbers for ``hub rules explain``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from hub.rules.lifecycle import Ctx
from hub.rules.readings import Sample

State = dict[str, Any]
R = TypeVar("R")
T = TypeVar("T")


class Kind(ABC):
    """A rule kind. Each kind decides what a new sample does (``on_sample``); by default nothing
    is scheduled and nothing is flushed."""

    @abstractmethod
    def on_sample(self, ctx: Ctx, st: State, s: Sample) -> None:
        """Update the rolling state ``st`` with one sample; raise or settle Flags via ``ctx``."""

    def on_samples(self, ctx: Ctx, st: State, samples: list[Sample]) -> None:
        """``on_sample`` of each of ``samples`` in turn (one message's, in time order). A kind
        may override it with a loop that gives the same state and outputs for less work (e.g.
        skipping samples that cannot change anything): the engine calls this one."""
        on_sample = self.on_sample
        for s in samples:
            on_sample(ctx, st, s)

    def flush(self, ctx: Ctx, st: State) -> None:
        return None

    def on_tick(self, ctx: Ctx, st: State, now: float) -> None:
        ctx.settle(st, now)

    def due(self, ctx: Ctx, st: State) -> float | None:
        return ctx.due(st)

    def explain(self, ctx: Ctx, st: State) -> dict[str, Any]:
        return {}


def fresh(st: State, s: Sample) -> bool:
    """True the first time a sample is seen, in time order; replays and late samples → False.

    Keeps the last instant and the references seen at it, so two Observations at one instant
    both count while the same Observation twice (a replay) counts once. A sample older than the
    last one cannot change a persistence count or a session that has moved on, so it is
    skipped — and leaves the state untouched, so a replay writes nothing.
    """
    last = st.get("t")
    if last is not None:
        if s.t < last:
            return False
        if s.t == last:
            refs: list[str] = st.setdefault("refs", [])
            if s.ref in refs:
                return False
            refs.append(s.ref)
            return True
    st["t"] = s.t
    st["refs"] = [s.ref]
    return True


class PerRule(Generic[R, T]):
    """``make(rule)`` computed once per rule object and reused (a kind's compiled form of its
    rule: precompiled tests, a plan, a set of measures), for the hot per-message path.

    Keyed by ``id(rule)``: a rule is a frozen pydantic model, and hashing one hashes every field,
    which cost more than the work it would save. Each entry holds its rule, so the rule stays
    alive and its id cannot be taken by another object while the entry exists; a reloaded rule
    program (new objects, even if equal) gets new entries. Past ``bound`` entries (rules of
    many reloads) the map starts over.
    """

    __slots__ = ("_bound", "_by_id", "_make")

    def __init__(self, make: Callable[[R], T], bound: int = 4096) -> None:
        self._make = make
        self._by_id: dict[int, tuple[R, T]] = {}
        self._bound = bound

    def __call__(self, rule: R) -> T:
        found = self._by_id.get(id(rule))
        if found is None:
            if len(self._by_id) >= self._bound:
                self._by_id.clear()
            found = self._by_id[id(rule)] = (rule, self._make(rule))
        return found[1]


# ``measures`` (a rule's list) as a set: ``wanted(rule).isdisjoint(s.values)`` tests a sample's
# one or two measures, where ``s.values.keys().isdisjoint(measures)`` built a view and walked
# the list (bench/rules.py, per sample).
wanted: PerRule[Any, frozenset[str]] = PerRule(lambda rule: frozenset(rule.measures))


def local_day(t: float, tz: str) -> int:
    """The proleptic ordinal of the calendar day ``t`` falls on in ``tz``."""
    return datetime.fromtimestamp(t, ZoneInfo(tz)).toordinal()


def cached_day(st: State, t: float, tz: str) -> tuple[int, float]:
    """(local day ordinal, its start) of ``t``, cached in ``st["day"]`` as [ordinal, start, end,
    zone]: readings of one day skip the time-zone arithmetic (the hot path's costliest step).
    A patient whose zone changed gets the new zone's days from the next reading on."""
    cached = st.get("day")
    if cached is None or not cached[1] <= t < cached[2] or cached[3:] != [tz]:
        ordinal = local_day(t, tz)
        cached = st["day"] = [ordinal, day_start(ordinal, tz), day_start(ordinal + 1, tz), tz]
    return cached[0], cached[1]


def day_start(ordinal: int, tz: str) -> float:
    """Epoch seconds of local midnight starting day ``ordinal`` in ``tz`` (a day is 23 or 25
    hours long across a daylight-saving change)."""
    day = datetime.fromordinal(ordinal)
    return day.replace(tzinfo=ZoneInfo(tz)).timestamp()


def day_text(ordinal: int) -> str:
    return datetime.fromordinal(ordinal).date().isoformat()


def when(t: float) -> str:
    """A compact UTC time for texts: 2026-11-20 08:00Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%MZ")


def fmt(value: float, unit: str | None) -> str:
    text = f"{value:.1f}".rstrip("0").rstrip(".") if not float(value).is_integer() \
        else f"{value:.0f}"
    return f"{text} {unit}" if unit else text
