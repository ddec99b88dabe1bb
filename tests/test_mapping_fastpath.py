"""The compiled mapping expressions give exactly what the hub's JMESPath interpreter gives."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jmespath.exceptions import JMESPathError

from hub.mappings import fastpath, functions

NAMES = ["a", "b", "item", "root", '"x y"']
LITERALS = ["'s'", "''", "`0`", "`0.0`", "`1`", "`false`", "`true`", "`null`", "`[]`", "`{}`",
            '`"lit"`', "`[1, 2]`", '`{"k": 1}`']

scalars = st.sampled_from([None, True, False, 0, 1, -2, 0.0, 2.5, "", "s", "7"])
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "item", "root", "x y", "k"]), inner, max_size=4),
    max_leaves=12,
)


def _expressions() -> st.SearchStrategy[str]:
    base = st.sampled_from(NAMES) | st.sampled_from(LITERALS) | st.just("@")

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(NAMES)).map(lambda t: f"{t[0]}.{t[1]}"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]} || {t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]} && {t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"{{k: {t[0]}, b: {t[1]}}}"),
            st.tuples(inner, inner).map(lambda t: f"[{t[0]}, {t[1]}]"),
            st.tuples(st.sampled_from(NAMES), inner).map(lambda t: f"{t[0]}.{{v: {t[1]}}}"),
            # interpreted subtrees, mixed with compiled ones
            inner.map(lambda e: f"{e}[0]"),
            inner.map(lambda e: f"{e}[*].a"),
            inner.map(lambda e: f"!{e}"),
            inner.map(lambda e: f"length({e})"),
            inner.map(lambda e: f"exp10({e}, `1`)"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]} == {t[1]})"),
        )

    return st.recursive(base, extend, max_leaves=6)


def _outcome(expression: Any, value: Any) -> tuple[str, bytes]:
    try:
        return "ok", orjson.dumps(expression.search(value))  # exact: 1 ≠ 1.0 ≠ true
    except JMESPathError as exc:
        return type(exc).__name__, b""


@settings(max_examples=1500, deadline=None)
@given(expression=_expressions(), document=documents)
def test_compiled_equals_interpreter(expression: str, document: Any) -> None:
    try:
        slow = functions.compile_expression(expression)
    except JMESPathError:
        with pytest.raises(JMESPathError):
            fastpath.compile_expression(expression)
        return
    fast = fastpath.compile_expression(expression)
    for value in (document, {"item": document, "root": {"a": document}}, None):
        assert _outcome(fast, value) == _outcome(slow, value), expression


@pytest.mark.parametrize("expression", [
    "item.value", "root.device.id", "root.device.system || 'urn:iomt-fhir-hub:device'",
    "item.components || {value: item.value}", "a.b.c.d", "@", "`0` || 'x'",
])
def test_canonical_shapes(expression: str) -> None:
    scope = {"item": {"value": 0, "components": {}, "type": "t"},
             "root": {"device": {"id": "d", "system": ""}}, "a": {"b": {"c": {"d": [1]}}}}
    assert _outcome(fastpath.compile_expression(expression), scope) == \
        _outcome(functions.compile_expression(expression), scope)


def test_unknown_function_fails_at_compile_as_before() -> None:
    with pytest.raises(JMESPathError):
        fastpath.compile_expression("nope(item)")


@settings(max_examples=1500, deadline=None)
@given(expression=_expressions(), document=documents)
def test_scope_keys_are_all_the_result_depends_on(expression: str, document: Any) -> None:
    """Searched over only the keys ``scope_keys`` names, an expression gives what it gives over
    the whole scope: the extractor evaluates root-only identifiers once per payload on this."""
    try:
        compiled = fastpath.compile_expression(expression)
    except JMESPathError:
        return
    keys = fastpath.scope_keys(compiled)
    if keys is None or not isinstance(document, dict):
        return
    others = {"item": {"a": 1}, "parent": [document], "b": "other", "x y": 0}
    scope = {**others, **document}
    only = {k: v for k, v in scope.items() if k in keys}
    assert _outcome(compiled, scope) == _outcome(compiled, only), (expression, keys)


@pytest.mark.parametrize(("expression", "keys"), [
    ("root.device.id", {"root"}),
    ("root.device.system || 'urn:iomt-fhir-hub:device'", {"root"}),
    ("{v: root.a, w: `1`}", {"root"}),
    ("item.components || {value: item.value}", {"item"}),
    ("root.a || item.b", {"root", "item"}),
    ("@", None),
    ("length(root.a)", None),
    ("root.a[0]", None),
])
def test_scope_keys(expression: str, keys: set[str] | None) -> None:
    assert fastpath.scope_keys(fastpath.compile_expression(expression)) == \
        (None if keys is None else frozenset(keys))
