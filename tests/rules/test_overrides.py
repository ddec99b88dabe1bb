"""Per-patient overrides are merge patches: objects merge as RFC 7396, keyed lists by key."""

from __future__ import annotations

from typing import Any

import pytest

from hub.rules.model import ThresholdRule
from hub.rules.overrides import merge
from hub.rules.program import changed_fields, with_override

from .conftest import PROGRAM


def dumped(rule_id: str, params: dict[str, Any]) -> dict[str, Any]:
    return with_override(PROGRAM.rules[rule_id], params).model_dump(mode="json")


def limits(trigger: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in trigger.items() if v is not None}


def test_objects_merge_as_rfc7396() -> None:
    # RFC 7396 section 3 example (arrays replaced, null removes a member, objects merge)
    target = {"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
              "tags": ["example", "sample"], "content": "This will be unchanged"}
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890",
             "author": {"familyName": None}, "tags": ["example"]}
    assert merge(target, patch) == {
        "title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
        "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"}
    assert target["author"] == {"givenName": "John", "familyName": "Doe"}  # not modified


def test_one_trigger_of_two_changes_and_the_other_stays() -> None:
    rule = dumped("bp-severe", {"any": [{"measure": "systolic", "at_or_above": 170}]})
    assert [limits(t) for t in rule["any"]] == [
        {"measure": "systolic", "at_or_above": 170.0, "clear_at": 159.0},
        {"measure": "diastolic", "at_or_above": 120.0, "clear_at": 99.0}]


def test_a_trigger_limit_is_one_slot_and_clear_at_is_kept() -> None:
    rule = dumped("spo2-low", {"any": [{"measure": "spo2", "at_or_below": 88}]})
    assert [limits(t) for t in rule["any"]] == [
        {"measure": "spo2", "at_or_below": 88.0, "clear_at": 92.0}]
    # without a limit, the patch names the measure's only trigger
    rule = dumped("spo2-low", {"any": [{"measure": "spo2", "clear_at": 94}]})
    assert [limits(t) for t in rule["any"]] == [
        {"measure": "spo2", "below": 90.0, "clear_at": 94.0}]


def test_a_new_key_is_appended_and_delete_removes() -> None:
    rule = dumped("spo2-low", {"any": [{"measure": "spo2", "above": 99}]})  # the high side
    assert [limits(t) for t in rule["any"]] == [
        {"measure": "spo2", "below": 90.0, "clear_at": 92.0}, {"measure": "spo2", "above": 99.0}]
    rule = dumped("bp-severe", {"any": [{"measure": "diastolic", "$patch": "delete"}]})
    assert [t["measure"] for t in rule["any"]] == ["systolic"]


def test_replace_directive_replaces_the_whole_list() -> None:
    rule = dumped("bp-severe", {"any": [{"$patch": "replace"},
                                        {"measure": "systolic", "above": 190}]})
    assert [limits(t) for t in rule["any"]] == [{"measure": "systolic", "above": 190.0}]


def test_nested_keyed_lists_merge() -> None:
    rule = dumped("spo2-low", {"escalate": [{"priority": "high", "immediate": False,
                                             "any": [{"measure": "spo2", "below": 80}]}]})
    (level,) = rule["escalate"]
    assert level["immediate"] is False
    assert [limits(t) for t in level["any"]] == [{"measure": "spo2", "below": 80.0}]


def test_notices_merge_by_recipient_and_category() -> None:
    rule = dumped("bp-severe", {"notify": [{"to": "patient", "category": "instruction",
                                            "suppress": "6h"}]})
    by_to = {n["to"]: n for n in rule["notify"]}
    assert by_to["patient"]["suppress"] == 6 * 3600 and by_to["patient"]["text"]
    assert by_to["care-team"]["suppress"] == 12 * 3600
    # a notice the file wrote without a category (alert by default) is found by its default
    rule = dumped("spo2-low", {"notify": [{"to": "care-team", "priority": "stat"}]})
    assert [n["priority"] for n in rule["notify"]] == ["stat"]


def test_cgm_targets_merge_by_metric_and_side() -> None:
    rule = dumped("cgm-consensus", {"targets": [{"metric": "tbr_low", "above": 1},
                                                {"metric": "tir", "below": 50}]})
    assert [(t["metric"], t["above"], t["below"]) for t in rule["targets"]] == [
        ("tbr_very_low", 1.0, None), ("tbr_low", 1.0, None), ("tir", None, 50.0)]


def test_null_restores_the_default_and_scalar_lists_are_replaced() -> None:
    rule = dumped("spo2-low", {"max_gap": None, "consecutive": 3})
    assert rule["max_gap"] is None and rule["consecutive"] == 3
    rule = dumped("device-silence", {"measures": ["spo2"]})
    assert rule["measures"] == ["spo2"]


@pytest.mark.parametrize(("params", "problem"), [
    ({"any": [{"below": 88}]}, "any[0]: name the item to change by its key"),
    ({"any": [{"measure": "spo2", "$patch": "delete"}, {"measure": "x", "$patch": "delete"}]},
     "any[1]: no item with that key to delete"),
    ({"any": [{"measure": "spo2", "$patch": "merge"}]}, "unknown directive 'merge'"),
    ({"flag": {"$patch": "replace"}}, "flag: '$patch' is only allowed in list items"),
    ({"any": [{"measure": "spo2", "below": 88, "above": 99}]},
     "give exactly one of below, at_or_below, above, at_or_above"),
    ({"title": None}, "title: Field required"),
    ({"kind": "silence"}, "an override cannot change 'kind'"),
])
def test_a_patch_that_cannot_apply_says_where(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        with_override(PROGRAM.rules["spo2-low"], params)
    assert problem in str(caught.value)


def test_an_ambiguous_patch_is_refused() -> None:
    rule = with_override(PROGRAM.rules["spo2-low"], {"any": [{"measure": "spo2", "above": 99}]})
    assert isinstance(rule, ThresholdRule)
    with pytest.raises(ValueError, match=r"any\[0\]: matches 2 items"):
        with_override(rule, {"any": [{"measure": "spo2", "clear_at": 93}]})


def test_changed_fields_name_what_the_override_changed() -> None:
    base = PROGRAM.rules["bp-severe"]
    changed = changed_fields(base, with_override(base, {"consecutive": 1}))
    assert changed == {"consecutive": 1}
