"""The hub's JMESPath dialect: the standard language plus a few exact arithmetic functions.

JMESPath has no arithmetic, yet vendors encode values that need it (Withings sends
``value * 10^unit``; a source in metres feeds a catalogue type in centimetres). The functions below
are the whole extension; each is exact in decimal, so ``exp10(74126, -3)`` is ``74.126`` and not
``74.12600000000001``:

- ``exp10(value, exponent)`` → value * 10^exponent (Withings' unit exponent)
- ``multiply(a, b)`` → a * b (scaling a unit, e.g. metres → centimetres)

Every mapping expression is compiled here, once, when its file loads. Evaluation reuses one
interpreter: building a fresh ``TreeInterpreter`` per search (what ``jmespath.search`` does) is
a measurable share of the per-reading cost on the hot path, and the interpreter keeps no state
between searches.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import jmespath
from jmespath import functions
from jmespath.exceptions import JMESPathError, UnknownFunctionError
from jmespath.visitor import Options, TreeInterpreter

__all__ = ["Expression", "compile_expression"]


def _decimal(value: Any) -> Decimal:
    # str() first: Decimal(0.1) would carry the binary float's noise into the result.
    try:
        return Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise JMESPathError("not a number") from None


def _number(result: Decimal) -> int | float:
    """An int when the exact result is whole at the precision given, else a float."""
    if result == result.to_integral_value() and int(result.as_tuple().exponent) >= 0:
        return int(result)
    return float(result)


class _HubFunctions(functions.Functions):
    @functions.signature({"types": ["number"]}, {"types": ["number"]})
    def _func_exp10(self, value: int | float, exponent: int | float) -> int | float:
        if int(exponent) != exponent:
            raise JMESPathError("exp10: the exponent must be whole")
        return _number(_decimal(value).scaleb(int(exponent)))

    @functions.signature({"types": ["number"]}, {"types": ["number"]})
    def _func_multiply(self, left: int | float, right: int | float) -> int | float:
        return _number(_decimal(left) * _decimal(right))


_INTERPRETER = TreeInterpreter(Options(custom_functions=_HubFunctions()))


class Expression:
    """A compiled mapping expression; ``search`` evaluates it with the hub's functions."""

    __slots__ = ("expression", "parsed")

    def __init__(self, expression: str, parsed: Any) -> None:
        self.expression = expression
        self.parsed = parsed

    def search(self, value: Any) -> Any:
        """The expression's result over ``value`` (None when a path does not exist)."""
        return _INTERPRETER.visit(self.parsed, value)

    def __repr__(self) -> str:
        return f"Expression({self.expression!r})"


def compile_expression(expression: str) -> Expression:
    """Parse once; raises ``jmespath.exceptions.JMESPathError`` on a syntax error or an unknown
    function name (so a typo fails when the file loads, not on the first payload)."""
    parsed = jmespath.compile(expression).parsed
    _check_functions(parsed)
    return Expression(expression, parsed)


_KNOWN = frozenset(name[len("_func_"):] for name in dir(_HubFunctions) if name.startswith("_func_"))


def _check_functions(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "function_expression" and node.get("value") not in _KNOWN:
            raise UnknownFunctionError(
                f"unknown function {node.get('value')}()")
        for child in node.get("children", ()):
            _check_functions(child)
