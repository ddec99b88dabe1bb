"""``PerRule``: a kind's compiled form of a rule, made once per rule object."""

from __future__ import annotations

from hub.rules.kinds.base import PerRule
from hub.rules.model import SilenceRule


def _silence(rule_id: str, measures: list[str]) -> SilenceRule:
    return SilenceRule.model_validate({"id": rule_id, "title": "t", "source": "test",
                                       "kind": "silence", "after": 86400.0,
                                       "measures": measures})


def test_made_once_per_rule_object() -> None:
    made: list[str] = []
    memo = PerRule(lambda r: made.append(r.id) or frozenset(r.measures))
    rule = _silence("a", ["heart_rate"])
    assert memo(rule) == frozenset({"heart_rate"})
    assert memo(rule) is memo(rule)
    assert made == ["a"]


def test_an_equal_but_new_rule_object_is_made_again() -> None:
    # A reloaded program builds new rule objects: their compiled form must come from them,
    # never from an older object that happens to compare equal or to have had the same id.
    made: list[int] = []
    memo = PerRule(lambda r: made.append(id(r)) or tuple(r.measures))
    first = _silence("a", ["spo2"])
    memo(first)
    assert memo(_silence("a", ["spo2"])) == ("spo2",)
    edited = _silence("a", ["spo2", "heart_rate"])
    assert memo(edited) == ("spo2", "heart_rate")
    assert memo(first) == ("spo2",)
    assert len(made) == 3


def test_bounded() -> None:
    memo = PerRule(lambda r: r.id, bound=3)
    rules = [_silence(f"r{i}", []) for i in range(10)]
    for r in rules:
        assert memo(r) == r.id
    assert len(memo._by_id) <= 3
    assert memo(rules[0]) == "r0"
