"""Mapping expressions compiled to Python closures: the same results as JMESPath, cheaper.

Device mappings are mostly dotted paths (``item.value``, ``root.device.id``), ``a || 'literal'``
defaults and small ``{name: path}`` objects. The tree interpreter walks the AST per search with a
dict dispatch per node; on the hot path (about ten expressions per reading) that was the largest
single cost of the worker. Measured on the canonical mapping (10 expressions per reading):
interpreter 21-23 µs → closures 3.5-4 µs per reading.

``compile_expression`` parses exactly as ``hub.mappings.functions.compile_expression`` does (same
errors, same function checks), then builds one closure per AST node of the kinds below. Every
other node — projections, filters, slices, comparators, functions (``exp10``, ...) — is evaluated
by the hub's JMESPath interpreter for that subtree, so the language is unchanged; only its common
subset is faster. Semantics follow ``jmespath.visitor.TreeInterpreter`` line for line:

- ``field``: ``value.get(name)``, None when ``value`` has no ``get`` (a list, a string, None)
- ``subexpression``: each child over the previous result (None propagates through fields)
- ``or_expression``/``and_expression``: JMESPath falsiness (``''``, ``[]``, ``{}``, None, false;
  unlike Python, ``0`` is true)
- ``literal``, ``current``/``identity``, ``multi_select_dict``/``multi_select_list`` (None over
  None)

``tests/test_mapping_fastpath.py`` checks the closures against the interpreter on generated
expressions and documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.mappings.functions import Expression
from hub.mappings.functions import compile_expression as compile_interpreted

__all__ = ["FastExpression", "compile_expression", "scope_keys"]

Evaluate = Callable[[Any], Any]


class FastExpression(Expression):
    """An ``Expression`` whose ``search`` runs compiled closures."""

    __slots__ = ("_evaluate",)

    def __init__(self, expression: str, parsed: Any) -> None:
        super().__init__(expression, parsed)
        self._evaluate = _compile(parsed)

    def search(self, value: Any) -> Any:
        """The expression's result over ``value``, exactly as the interpreter gives it."""
        return self._evaluate(value)


def compile_expression(expression: str) -> FastExpression:
    """Parse and check as ``hub.mappings.functions.compile_expression``, then compile."""
    checked = compile_interpreted(expression)
    return FastExpression(checked.expression, checked.parsed)


def _is_false(value: Any) -> bool:
    # Equality, not truthiness, exactly as TreeInterpreter._is_false: 0 and 0.0 are true.
    # For a str, list or dict itself (what JSON decodes to) that equality is its emptiness;
    # None and False are told by identity before any comparison builds an empty list and dict
    # to compare with (``a || b`` over a missing field: every reading's ``item.components``).
    cls = value.__class__
    if cls is str or cls is list or cls is dict:
        return not value
    return value is None or value is False or value == "" or value == [] or value == {}


def _field(name: str) -> Evaluate:
    def field(value: Any) -> Any:
        try:
            return value.get(name)
        except AttributeError:
            return None
    return field


def _path(names: list[str]) -> Evaluate:
    # A chain of fields: one try block instead of one closure call per step. A step over None
    # (or any value without ``get``) raises AttributeError, and every later step would give None.
    if len(names) == 2:
        first, second = names

        def path2(value: Any) -> Any:
            try:
                return value.get(first).get(second)
            except AttributeError:
                return None
        return path2
    if len(names) == 3:
        first, second, third = names

        def path3(value: Any) -> Any:
            try:
                return value.get(first).get(second).get(third)
            except AttributeError:
                return None
        return path3

    def path(value: Any) -> Any:
        try:
            for name in names:
                value = value.get(name)
        except AttributeError:
            return None
        return value
    return path


def _chain(steps: list[Evaluate]) -> Evaluate:
    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value
    return chain


def _or(left: Evaluate, right: Evaluate) -> Evaluate:
    def either(value: Any) -> Any:
        matched = left(value)
        return right(value) if _is_false(matched) else matched
    return either


def _and(left: Evaluate, right: Evaluate) -> Evaluate:
    def both(value: Any) -> Any:
        matched = left(value)
        return matched if _is_false(matched) else right(value)
    return both


def _literal(constant: Any) -> Evaluate:
    # The interpreter returns the parsed constant itself (not a copy); so does this.
    return lambda _value: constant


def _identity(value: Any) -> Any:
    return value


def _multi_dict(pairs: list[tuple[str, Evaluate]]) -> Evaluate:
    def multi(value: Any) -> Any:
        if value is None:
            return None
        return {key: evaluate(value) for key, evaluate in pairs}
    return multi


def _multi_list(items: list[Evaluate]) -> Evaluate:
    def multi(value: Any) -> Any:
        if value is None:
            return None
        return [evaluate(value) for evaluate in items]
    return multi


def _interpreted(node: Any) -> Evaluate:
    # The hub's interpreter (with its functions) evaluates this subtree.
    return Expression("", node).search


def _compile(node: dict[str, Any]) -> Evaluate:
    kind = node["type"]
    children: list[dict[str, Any]] = node.get("children", [])
    if kind == "field":
        return _field(node["value"])
    if kind == "subexpression":
        if all(child["type"] == "field" for child in children):
            return _path([child["value"] for child in children])
        return _chain([_compile(child) for child in children])
    if kind == "or_expression":
        return _or(_compile(children[0]), _compile(children[1]))
    if kind == "and_expression":
        return _and(_compile(children[0]), _compile(children[1]))
    if kind == "literal":
        return _literal(node["value"])
    if kind in ("current", "identity"):
        return _identity
    if kind == "multi_select_dict":
        return _multi_dict([(pair["value"], _compile(pair["children"][0]))
                            for pair in children])
    if kind == "multi_select_list":
        return _multi_list([_compile(child) for child in children])
    return _interpreted(node)


# Node kinds whose value is a pure function of the value searched (no function calls, no
# projections): what ``scope_keys`` can reason about.
_PURE = frozenset({"field", "subexpression", "or_expression", "and_expression", "literal",
                   "current", "identity", "multi_select_dict", "multi_select_list", "key_val_pair"})


def _pure(node: dict[str, Any]) -> bool:
    return node["type"] in _PURE and all(_pure(child) for child in node.get("children", ()))


def _top_keys(node: dict[str, Any]) -> frozenset[str] | None:
    kind = node["type"]
    children: list[dict[str, Any]] = node.get("children", [])
    if kind == "field":
        return frozenset((node["value"],))
    if kind == "literal":
        return frozenset()
    if kind == "subexpression":  # the later steps search the first step's result
        return _top_keys(children[0])
    if kind in ("or_expression", "and_expression", "multi_select_dict", "multi_select_list",
                "key_val_pair"):
        keys: frozenset[str] = frozenset()
        for child in children:
            found = _top_keys(child)
            if found is None:
                return None
            keys |= found
        return keys
    return None  # ``@`` over the whole value, or a kind not reasoned about


def scope_keys(expression: Expression) -> frozenset[str] | None:
    """The keys of the searched object (a mapping's scope: ``item``, ``root``, ``parent``) the
    expression's result depends on, or None when that is not known (functions, projections,
    ``@`` over the whole scope...). An expression whose keys are ``{"root"}`` gives the same
    result for every item of a payload."""
    parsed = expression.parsed
    return _top_keys(parsed) if _pure(parsed) else None
