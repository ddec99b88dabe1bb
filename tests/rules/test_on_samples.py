"""A kind's ``on_samples`` (what the engine calls with one message's samples) gives the state
and outputs that its samples one message each gave, byte for byte: the batch loops that skip
samples (Silence, DaysWithData) or read the rule once (Threshold, Baseline, NEWS2) change
nothing but the cost."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from hub.rules.kinds import KINDS
from hub.rules.lifecycle import Ctx
from hub.rules.readings import Sample

from .conftest import PROGRAM, T0

START = T0.timestamp()
RULES = ["device-silence", "rpm-days-with-data", "sbp-baseline", "dbp-baseline", "hr-baseline",
         "spo2-baseline", "news2", "bp-severe", "spo2-low"]


def _samples(rng: random.Random, count: int) -> list[Sample]:
    """BP, SpO2 and heart rate readings hours to days apart, some dangerous, some held for
    review, a few replayed or late (as messages can bring them)."""
    t = START
    found: list[Sample] = []
    for index in range(count):
        t += rng.choices([1, 60, 600, 3600, 4 * 3600, 8 * 3600, 26 * 3600, 4 * 86400],
                         weights=[2, 2, 2, 4, 8, 6, 1, 0.3])[0]
        kind = rng.randrange(3)
        shift = index > count * 0.6  # a lasting change the baselines should notice
        # dangerous values: a few days of them, and now and then one
        spike = count * 0.3 < index < count * 0.36 or rng.random() < 0.03
        if kind == 0:
            values: dict[str, Any] = {
                "systolic": 200.0 if spike else rng.gauss(160 if shift else 125, 4),
                "diastolic": 125.0 if spike else rng.gauss(95 if shift else 78, 3)}
        elif kind == 1:
            values = {"spo2": 83.0 if spike else float(round(rng.gauss(91 if shift else 97, 1)))}
        else:
            values = {"heart-rate": 135.0 if spike else rng.gauss(95 if shift else 64, 3)}
        sample = Sample("p1", t, f"Observation/{index}", values, rng.random() > 0.05)
        found.append(sample)
        if rng.random() < 0.05:
            found.append(sample)  # a replay
        if rng.random() < 0.05 and len(found) > 3:
            found.append(found[-3])  # a late one
    return found


def _run(rule_id: str, messages: list[list[Sample]], *, batched: bool
         ) -> tuple[bytes, list[bytes]]:
    """The state (as stored) and every output after the messages, each message's samples
    given to ``on_samples`` at once (``batched``) or to ``on_sample`` one by one; the
    scheduler runs between messages (silences, closed sets, resolutions)."""
    rule = PROGRAM.rules[rule_id]
    kind = KINDS[rule.kind]
    st: dict[str, Any] = {}
    out: list[bytes] = []
    for number, samples in enumerate(messages):
        ctx = Ctx("p1", rule, 1, PROGRAM.care_team, PROGRAM.measures, "Europe/London")
        if batched:
            kind.on_samples(ctx, st, samples)
        else:
            for s in samples:
                kind.on_sample(ctx, st, s)
        kind.flush(ctx, st)
        kind.on_tick(ctx, st, samples[-1].t + 3 * 86400 * (number % 2))
        out.extend(orjson.dumps(r) for r in ctx.out)
    return orjson.dumps(st), out


@pytest.mark.parametrize("rule_id", RULES)
@pytest.mark.parametrize("seed", range(6))
def test_one_call_per_message_equals_one_per_sample(rule_id: str, seed: int) -> None:
    rng = random.Random(seed)
    samples = _samples(rng, 400)
    messages: list[list[Sample]] = []
    index = 0
    while index < len(samples):  # messages of 1 to 60 samples, each in time order
        size = rng.choice([1, 2, 5, 20, 60])
        messages.append(sorted(samples[index:index + size], key=lambda s: s.t))
        index += size
    batched = _run(rule_id, messages, batched=True)
    assert batched == _run(rule_id, messages, batched=False)
    assert batched[1] or rule_id in ("rpm-days-with-data",), "outputs exercised"
