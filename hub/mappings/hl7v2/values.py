"""OBX-5 by OBX-2 value type → a typed value (``hub.contracts.ObservedValue``).

NM (with a leading comparator, ``<40``), SN (``comparator^num1^separator/suffix^num2``: a number,
a range ``1-5`` or a ratio ``1:128``), ST/TX/FT text, CWE/CE/CNE/CF codes, DT/DTM/TS times and
NA/MA numeric arrays (SampledData). Other types (ED, RP, ...) raise :class:`Unsupported`. Errors
name the field, never the value.
"""

from __future__ import annotations

import re
from datetime import tzinfo
from math import isfinite

from hub.contracts import (
    Code,
    Concept,
    DateTimeText,
    ObservedValue,
    Quantity,
    Range,
    Ratio,
    ReferenceRange,
    Samples,
)
from hub.hl7v2 import Repetition, Segment
from hub.mappings.hl7v2.codes import system_uri
from hub.mappings.hl7v2.times import parse_dtm

_COMPARATORS = ("<=", ">=", "<", ">")  # longest first
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_RANGE = re.compile(r"\s*([+-]?\d+\.?\d*)\s*-\s*([+-]?\d+\.?\d*)\s*\Z")
NUMERIC_TYPES = frozenset({"NM", "SN"})
TEXT_TYPES = frozenset({"ST", "TX", "FT"})
CODED_TYPES = frozenset({"CWE", "CE", "CNE", "CF", "CD"})
TIME_TYPES = frozenset({"DTM", "DT", "TS"})
ARRAY_TYPES = frozenset({"NA", "MA"})
SUPPORTED = NUMERIC_TYPES | TEXT_TYPES | CODED_TYPES | TIME_TYPES | ARRAY_TYPES


class Unsupported(ValueError):
    """The value (or value type) cannot be represented; the message says which and why."""


def number(text: str) -> int | float:
    """A decimal as int when it has no fraction part (``120``), else float (``98.6``)."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        return int(value)  # the usual case, without the pattern
    if not _NUMBER.match(value):
        raise ValueError("not a number")
    if "." in value or "e" in value or "E" in value:
        result = float(value)
        if not isfinite(result):
            raise ValueError("not a finite number")
        return result
    return int(value)


def split_comparator(text: str) -> tuple[str | None, str]:
    """``"<40"`` → ``("<", "40")``; no comparator → ``(None, text)``."""
    value = text.strip()
    for comparator in _COMPARATORS:
        if value.startswith(comparator):
            return comparator, value[len(comparator):]
    return None, value


def concept(rep: Repetition, local: str) -> Concept:
    """A CWE/CE repetition: primary (1-3) and alternate (4-6) codings, text from 2 (or 9)."""
    codings: list[Code] = []
    for first in (1, 4):
        code = rep.component(first).strip()
        if code:
            display = rep.component(first + 1).strip() or None
            codings.append(Code(system_uri(rep.component(first + 2), local), code, display))
    text = rep.component(9).strip() or rep.component(2).strip() or None
    if not codings and text is None:
        text = rep.text.strip() or None
    return Concept(tuple(codings), text)


def observed_value(obx: Segment, value_type: str, unit: str | None, unit_text: str | None,
                   zone: tzinfo, local: str, component_sep: str = "^") -> ObservedValue | None:
    """The value of OBX-5 typed by ``value_type``; None when OBX-5 is empty.

    Raises ValueError (bad value for the type) or :class:`Unsupported` (type not converted, or a
    repeated value for a single-valued type).
    """
    reps = obx.repetitions(5)
    if not reps or (len(reps) == 1 and not reps[0].raw.strip()):
        return None
    if value_type in TEXT_TYPES:
        # TX/FT repetitions are lines of one text; ST is one value.
        return "\n".join(r.text for r in reps) if value_type != "ST" else reps[0].text
    if len(reps) > 1 and value_type not in ARRAY_TYPES:
        raise Unsupported(f"OBX-5 repeats, but {value_type} holds one value (FHIR has one "
                          "value per Observation)")
    rep = reps[0]
    if value_type == "NM":
        comparator, text = split_comparator(rep.text)
        return Quantity(number(text), unit, unit_text, comparator)
    if value_type == "SN":
        return _structured_numeric(rep, unit, unit_text)
    if value_type in CODED_TYPES:
        return concept(rep, local)
    if value_type in TIME_TYPES:
        parsed = parse_dtm(rep.component(1), zone)
        return None if parsed is None else DateTimeText(parsed.fhir())
    if value_type in ARRAY_TYPES:
        return _samples(reps, unit, component_sep)
    raise Unsupported(f"OBX-2 value type {value_type or 'empty'} is not converted")


def _structured_numeric(rep: Repetition, unit: str | None, unit_text: str | None
                        ) -> ObservedValue:
    comparator = rep.component(1).strip() or None
    first, separator, second = (rep.component(2).strip(), rep.component(3).strip(),
                                rep.component(4).strip())
    if comparator is not None and comparator not in _COMPARATORS and comparator != "=":
        raise ValueError("SN-1 comparator is not one of > < >= <= =")
    if comparator == "=":
        comparator = None
    if not separator:
        if second:
            raise ValueError("SN-4 given without a separator")
        return Quantity(number(first), unit, unit_text, comparator)
    if comparator is not None:
        raise Unsupported("SN with both a comparator and a separator has no FHIR form")
    if separator in ("-",):
        return Range(Quantity(number(first), unit, unit_text),
                     Quantity(number(second), unit, unit_text))
    if separator in (":", "/"):
        return Ratio(Quantity(number(first)), Quantity(number(second)))
    if separator in ("+", ".") and not second:
        return f"{first}{separator}"  # categorical results such as "2+"
    raise ValueError("SN-3 separator is not one of - : / + .")


def _samples(reps: list[Repetition], unit: str | None, component_sep: str) -> Samples:
    rows: list[list[int | float]] = []
    for rep in reps:
        parts = rep.raw.split(component_sep)
        rows.append([number(p) for p in parts if p.strip()])
    width = len(rows[0]) if len(reps) > 1 else 1
    if len(reps) > 1 and any(len(r) != width for r in rows):
        raise ValueError("MA repetitions differ in their number of channels")
    data = tuple(v for row in rows for v in row)
    if not data:
        raise ValueError("numeric array is empty")
    return Samples(data, unit, dimensions=width)


def reference_range(text: str, unit: str | None, unit_text: str | None) -> ReferenceRange | None:
    """OBX-7: ``low-high``, ``<x`` (high only), ``>x`` (low only), else kept as text."""
    value = text.strip()
    if not value:
        return None
    found = _RANGE.match(value)
    try:
        if found is not None:
            return ReferenceRange(value, Quantity(number(found.group(1)), unit, unit_text),
                                  Quantity(number(found.group(2)), unit, unit_text))
        comparator, rest = split_comparator(value)
        if comparator in ("<", "<="):
            return ReferenceRange(value, high=Quantity(number(rest), unit, unit_text))
        if comparator in (">", ">="):
            return ReferenceRange(value, low=Quantity(number(rest), unit, unit_text))
    except ValueError:
        pass
    return ReferenceRange(value)
