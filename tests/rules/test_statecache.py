"""Neither the decoded-state cache (hub/rules/statecache.py) nor evaluating a worker
transaction's messages together (``RulesEngine.evaluate_reads``) changes anything: a cohort
replayed with both, and without either (one message per transaction, nothing cached), writes
the same resources and the same state rows; every cached state is exactly (types included)
what decoding its row would give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from hub.cli.simulate import replay as replay_cohort
from hub.pipeline import Pipeline
from hub.rules import store as rule_store
from hub.rules.cohort import Cohort, generate
from hub.rules.engine import RulesEngine
from hub.rules.outputs import RULE_TAG_SYSTEM
from hub.rules.statecache import StateCache
from hub.runtime import Hub
from hub.settings import Settings
from hub.store.db import upgrade
from hub.store.models import Resource, RulePatientState
from hub.telemetry import Telemetry
from tests.conftest import REPO


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (a tuple is not a list, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_cache(engine: RulesEngine) -> int:
    entries = engine._cache.entries()
    for _patient, text, states, decoded in entries:
        assert rule_store.pack(states) == text
        for rule_id, st in decoded.items():
            assert same(st, orjson.loads(states[rule_id])), rule_id
    return len(entries)


def replay(cohort: Cohort, tmp: Path, cache: int, batch: int
           ) -> tuple[list[Any], list[Any]]:
    url = f"sqlite:///{tmp}/hub.db"
    upgrade(url)
    settings = Settings(database_url=url, env="test", mappings_dir=REPO / "mappings",
                        inline_worker=False, sqlite_synchronous="NORMAL")
    hub = Hub.build(settings, Telemetry.disabled())
    rules = RulesEngine(REPO / "mappings" / "rules", state_cache=cache)
    pipeline = Pipeline(connectors=hub.connectors, mappings=hub.mappings, rules=rules,
                        router=hub.pipeline.router)
    cached = 0

    def check(_hour: int) -> None:
        nonlocal cached
        cached = max(cached, check_cache(rules))

    replay_cohort(cohort, hub, pipeline, batch=batch, after_hour=check)
    assert (cached > 0) == (cache > 0)
    with hub.engine.connect() as conn:
        # what the rules wrote (the readings' own meta.source names random inbox ids)
        resources = [tuple(r) for r in conn.execute(
            select(Resource.res_type, Resource.res_id, Resource.version_id, Resource.content)
            .order_by(Resource.res_type, Resource.res_id)) if RULE_TAG_SYSTEM in r[3]]
        states = [tuple(r) for r in conn.execute(
            select(RulePatientState.patient_id, RulePatientState.states)
            .order_by(RulePatientState.patient_id))]
    hub.engine.dispose()
    return resources, states


@pytest.mark.slow
def test_a_cohort_gives_the_same_outputs_and_states_with_and_without_cache_and_batches(
        tmp_path: Path) -> None:
    cohort = generate(8, 24, seed=7, eventful=1.0)
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    with_cache = replay(cohort, tmp_path / "on", 2048, 64)
    without = replay(cohort, tmp_path / "off", 0, 1)
    kinds = {r[0] for r in with_cache[0]}
    assert {"Flag", "Communication", "Observation"} <= kinds  # the rules did write
    assert with_cache == without


def test_an_entry_is_used_only_for_the_text_it_encodes_and_only_once() -> None:
    cache = StateCache(2)
    cache.put("p1", "a\t{}", {"a": "{}"}, {"a": {}})
    assert cache.take("p1", "a\t{\"n\":1}") is None  # another writer's row: decode it
    assert cache.take("p1", "a\t{}") is None  # the mismatch dropped the entry
    cache.put("p1", "a\t{}", {"a": "{}"}, {"a": {}})
    assert cache.take("p1", "a\t{}") == ({"a": "{}"}, {"a": {}})
    assert cache.take("p1", "a\t{}") is None  # taken: the evaluation owns it now
    for patient in ("p1", "p2", "p3"):
        cache.put(patient, "", {}, {})
    assert [e[0] for e in cache.entries()] == ["p2", "p3"]  # least recently used dropped
