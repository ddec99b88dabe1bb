"""UCUM unit conversion, compiled once per (source unit, canonical unit) pair, cheap per reading.

A catalogue type declares its canonical UCUM unit and the source units it accepts and converts
(``UnitSpec.convert_from``); a device mapping says which unit a source used (``unit:``). A reading
in the canonical unit (or one of its aliases) is passed through untouched. A reading in an
accepted source unit is converted here.

Library: **ucumvert** (MIT; https://pypi.org/project/ucumvert/). It parses the full UCUM grammar
(generated from the official ucum-essence.xml, UCUM 2.2) and maps every UCUM atom onto a pint
unit; pint then does the dimensional analysis, the affine temperature scales (``[degF]`` →
``Cel``) and, in its ``chemistry`` context, mass ↔ substance concentrations with a molar mass.
Rejected: pint alone (it does not read UCUM codes: ``Cel``, ``[lb_av]``, ``mm[Hg]``, ``[in_i]``
are not pint names); ``ucumate`` (embeds a Java library and needs a Java 21 JVM in-process via
JPype); ``pyucum`` (calls a remote UCUM web service; the hub must not need the network to
normalize a reading).

Cost, measured on this repo's 2-core dev machine (Python 3.11, pint 0.25, ucumvert 0.3.2; CPU
time, best of 3): building the UCUM registry ≈ 0.43 s CPU (≈ 0.63 s wall) once per process; one
pint ``Quantity.to`` between pre-parsed units ≈ 14 µs (≈ 30 µs from ucumvert's parsed
quantities); parsing two UCUM codes and deriving a pair ≈ 0.9-1.15 ms. The whole per-reading
budget at 20,000 readings/s is 50 µs, so pint never runs per reading: each pair is compiled once
into ``y = factor·x + offset`` (every UCUM conversion between commensurable non-logarithmic
units is linear or affine), checked against pint at a third point, and cached. A converted
value then costs ≈ 1.3-1.8 µs (cache lookup, the input's decimals, one multiply-add,
``round``); build_observation for body weight: 11.4 µs in kg, 13.2 µs from [lb_av]. See
tests/test_units.py (asserted relative to pint in the same run).

Quirk: ucumvert maps ``mm[Hg]`` onto pint's conventional mmHg (133.322387 Pa) where UCUM says
133.3220 Pa, 2.9 ppm apart; kPa→mm[Hg] therefore differs from UCUM by that much, far below any
cuff's resolution (pinned in tests/test_units.py).

Precision rule (documented in docs/terminology.md): a converted value keeps the *resolution* of
the input. The input's resolution is one unit in its last written decimal place (``180.4`` →
0.1); converted, that step becomes ``|factor| * 0.1``; the result is rounded to the decimal place
of the largest power of ten not above that step, so rounding never loses what the input said and
adds at most one digit: ``180.4 [lb_av]`` → ``81.83 kg``, ``98.6 [degF]`` → ``37.0 Cel``,
``6.0 mmol/L`` → ``108 mg/dL``. A result rounded to units or coarser is an ``int``. Decimals are
read from the text when the source sent a string (``"98.60"`` keeps two); a JSON number has
already lost its trailing zeros when it was parsed (``98.60`` arrives as ``98.6``), which this
rule cannot recover. Values in the canonical unit are never rounded or otherwise touched.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hub.errors import DataError
from hub.mappings.schema import TypeSpec, UnitSpec

# A float that came out of arithmetic (0.1 + 0.2 → 0.30000000000000004) says nothing about the
# device's precision; past this many decimals the input's resolution is taken as unknown and
# capped, so a converted value never carries more than this many digits after the point
# beyond the conversion's own shift.
MAX_DECIMALS = 6


class UnitConversionError(ValueError):
    """Two units cannot be converted (unknown UCUM code, not commensurable, no molar mass)."""


@dataclass(frozen=True, slots=True)
class Conversion:
    """``y = factor·x + offset`` from ``source`` to ``target``, plus the precision shift.

    ``shift`` is ``floor(log10(|factor|))``: how many decimal places the input's resolution moves
    (lb→kg: factor 0.4536, shift -1, so one more decimal; mmol/L→mg/dL: 18.0156, shift 1).
    """

    source: str
    target: str
    factor: float
    offset: float
    shift: int

    def apply(self, number: int | float, raw: object) -> int | float:
        """Convert ``number`` (already parsed from ``raw``) keeping ``raw``'s resolution."""
        places = decimals(raw) - self.shift
        converted = self.factor * number + self.offset
        if places <= 0:
            return int(round(converted, places))
        return round(converted, places)


def decimals(raw: object) -> int:
    """Decimal places the source wrote: ``"98.60"`` → 2, ``180.4`` → 1, ``72`` → 0, ``1.2e3`` → -2.

    Contract: ints (and bools' absence) give 0; strings are read as written; floats through
    ``repr`` (the shortest text that round-trips, so trailing zeros are gone); capped at
    MAX_DECIMALS.
    """
    if isinstance(raw, int):
        return 0
    text = raw.strip() if isinstance(raw, str) else repr(raw)
    mantissa, _, exponent = text.lower().partition("e")
    point = mantissa.find(".")
    places = 0 if point < 0 else len(mantissa) - point - 1
    if exponent:
        with suppress(ValueError):  # "1.5e" is not a number; _number refuses it anyway
            places -= int(exponent)
    return min(places, MAX_DECIMALS)


# --- compilation (load time / first use; never per reading) ------------------------------------

_LOCK = threading.Lock()
_UCUM: tuple[Any, Any, Any] | None = None  # (pint registry, lark parser, transformer)


def _ucum() -> tuple[Any, Any, Any]:
    """The UCUM-aware pint registry, built once per process (≈ 0.43 s CPU, measured)."""
    global _UCUM
    with _LOCK:
        if _UCUM is None:
            import ucumvert  # type: ignore[import-untyped]  # heavy: imported only when needed
            from pint import UnitRegistry

            registry: Any = UnitRegistry()
            registry.load_definitions(Path(ucumvert.__file__).parent / "pint_ucum_defs.txt")
            # Our own registry, passed explicitly: ucumvert's PintUcumRegistry transforms into
            # pint's *application* registry, and mixing registries breaks contexts.
            _UCUM = (registry, ucumvert.get_ucum_parser(),
                     ucumvert.UcumToPintTransformer(ureg=registry))
        return _UCUM


def _pint_quantity(code: str) -> Any:
    registry, parser, transformer = _ucum()
    try:
        parsed = transformer.transform(parser.parse(code))
    except Exception as exc:  # lark and pint raise many types; all mean "not a usable UCUM code"
        raise UnitConversionError(f"'{code}' is not a UCUM unit this hub can convert "
                                  f"({type(exc).__name__})") from None
    if not hasattr(parsed, "units"):  # an annotation alone ("{steps}") is UCUM's unity
        return registry.Quantity(1)
    return parsed


def is_ucum(code: str) -> bool:
    """Whether ``code`` parses as UCUM (case-sensitive, full grammar)."""
    _registry, parser, _transformer = _ucum()
    try:
        parser.parse(code)
    except Exception:  # lark's errors: not UCUM
        return False
    return True


@cache
def compile_conversion(source: str, target: str, molar_mass: float | None = None) -> Conversion:
    """The linear/affine map from UCUM ``source`` to UCUM ``target``, derived with pint.

    ``molar_mass`` (g/mol) allows mass ↔ substance concentrations (mg/dL ↔ mmol/L). Raises
    UnitConversionError when the units are not commensurable. Cached per process.
    """
    registry = _ucum()[0]
    src, dst = _pint_quantity(source), _pint_quantity(target)

    def convert(x: float) -> float:
        quantity = registry.Quantity(x * src.magnitude, src.units)
        converted = quantity.to(dst.units)
        return float(converted.magnitude) / float(dst.magnitude)

    try:
        if molar_mass is not None:
            with registry.context("chemistry", mw=molar_mass * registry("g/mol")):
                at0, at1, at100 = convert(0.0), convert(1.0), convert(100.0)
        else:
            at0, at1, at100 = convert(0.0), convert(1.0), convert(100.0)
    except Exception as exc:  # pint's DimensionalityError, OffsetUnitCalculusError, ...
        hint = "" if molar_mass is not None else " (a molar_mass may be needed)"
        raise UnitConversionError(f"cannot convert {source} to {target}: "
                                  f"{type(exc).__name__}{hint}") from None
    factor, offset = at1 - at0, at0
    if factor == 0 or not math.isclose(factor * 100.0 + offset, at100, rel_tol=1e-12,
                                       abs_tol=1e-9):
        raise UnitConversionError(f"{source} → {target} is not a linear conversion")
    return Conversion(source, target, factor, offset, math.floor(math.log10(abs(factor))))


# --- the hot-path lookup ------------------------------------------------------------------------

# (id(UnitSpec), source spelling) → (the UnitSpec, its Conversion or None if not accepted, or the
# error text of a broken declaration). Keyed by identity because UnitSpec holds lists (not
# hashable); the stored spec guards against a recycled id after a hot reload.
_RESOLVED: dict[tuple[int, str], tuple[UnitSpec, Conversion | str | None]] = {}
_RESOLVED_MAX = 4096  # hot reloads make new specs; old entries are dropped wholesale past this


def converter(unit: UnitSpec, given: str, where: str) -> Conversion | None:
    """The conversion from the source spelling ``given`` into ``unit.code``.

    Returns None when ``given`` is not one of ``unit.convert_from`` (the caller reports the
    unit as not accepted). Raises DataError when the catalogue declares a conversion that cannot
    be done (caught by tests/test_units.py before it ships). A dict lookup after the first call.
    """
    key = (id(unit), given)
    hit = _RESOLVED.get(key)
    if hit is None or hit[0] is not unit:
        if len(_RESOLVED) >= _RESOLVED_MAX:
            _RESOLVED.clear()
        hit = (unit, _resolve(unit, given))
        _RESOLVED[key] = hit
    resolved = hit[1]
    if isinstance(resolved, str):
        raise DataError(resolved, location=where)
    return resolved


def _resolve(unit: UnitSpec, given: str) -> Conversion | str | None:
    for source in unit.convert_from:
        if given == source.code or given in source.aliases:
            try:
                return compile_conversion(source.code, unit.code, unit.molar_mass)
            except UnitConversionError as exc:
                return f"catalogue conversion is broken: {exc}"
    return None


def declared_units(spec: TypeSpec) -> list[UnitSpec]:
    """Every UnitSpec a type uses: its value's and its components'."""
    units = [spec.unit] if spec.unit is not None else []
    return units + [c.unit for c in spec.components]


def warm(types: Iterable[TypeSpec]) -> list[str]:
    """Compile every conversion the catalogue declares; return the problems (empty if none).

    Call after loading a mapping set so the first converted reading does not pay pint's start-up
    (≈ 0.5 s) and a broken declaration is found before any reading needs it.
    """
    problems: list[str] = []
    for spec in types:
        for unit in declared_units(spec):
            for source in unit.convert_from:
                try:
                    compile_conversion(source.code, unit.code, unit.molar_mass)
                except UnitConversionError as exc:
                    problems.append(str(exc))
    return problems
