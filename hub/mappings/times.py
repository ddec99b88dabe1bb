"""Source times → aware datetimes, for every ``time_format`` a device mapping may declare.

A source time either names an instant (UNIX epochs, ISO 8601 with an offset, .NET ``Date(ms)``)
or a wall-clock reading (ISO 8601 without an offset, iHealth's local epoch). A wall-clock reading
is placed on the mapping's ``time_zone`` (else the hub's default zone); an instant keeps its
instant and is only *shown* at the source's zone, so a reading's identity (its UTC instant) never
depends on how its zone was written.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.errors import DataError

_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2}):?(\d{2})?$")
_DOTNET = re.compile(r"^/?Date\((-?\d+)(?:([+-])(\d{2})(\d{2}))?\)/?$")
_EPOCH_DIVISOR = {"epoch_s": 1, "epoch_ms": 1_000, "epoch_ns": 1_000_000_000}


@lru_cache(maxsize=512)
def zone(text: str) -> tzinfo | None:
    """An IANA zone or a UTC offset (``-0800``, ``+02:00``, ``-8``); None when neither."""
    if text in ("Z", "UTC", "GMT"):
        return UTC
    found = _OFFSET.match(text)
    if found:
        sign, hours, minutes = found.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def source_zone(raw: Any, where: str) -> tzinfo | None:
    """The zone a ``time_zone`` expression yielded (None when it yielded nothing)."""
    if raw is None or raw == "":
        return None
    found = zone(str(raw))
    if found is None:
        raise DataError("time zone is neither an IANA name nor a UTC offset", location=where)
    return found


def parse_time(raw: Any, fmt: str, default_tz: tzinfo, where: str,
               source_tz: tzinfo | None = None) -> datetime:
    """A source time → aware datetime; DataError names the format expected and where."""
    try:
        if fmt in _EPOCH_DIVISOR:
            instant = _epoch(raw, _EPOCH_DIVISOR[fmt])
            return instant.astimezone(source_tz) if source_tz is not None else instant
        if fmt == "local_epoch_s":
            if source_tz is None:
                raise DataError("local_epoch_s needs a time zone and none was found",
                                location=where)
            wall = _epoch(raw, 1).replace(tzinfo=None)
            return wall.replace(tzinfo=source_tz)
        if fmt == "dotnet_date":
            return _dotnet(raw, source_tz)
        if not isinstance(raw, str):
            raise TypeError
        parsed = datetime.fromisoformat(raw)
    except (TypeError, ValueError, OverflowError, OSError):
        raise DataError(f"time is not a valid {fmt} value", location=where) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=source_tz or default_tz)
    return parsed.astimezone(source_tz) if source_tz is not None else parsed


def _epoch(raw: Any, divisor: int) -> datetime:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise TypeError
    if isinstance(raw, str):
        # integer arithmetic: nanosecond strings exceed a float's precision
        seconds, rest = divmod(int(raw), divisor) if raw.lstrip("-").isdigit() else (
            divmod(float(raw), divisor))
    else:
        seconds, rest = divmod(raw, divisor)
    micro = round(rest * 1_000_000 / divisor)
    return datetime.fromtimestamp(int(seconds), UTC) + timedelta(microseconds=micro)


def _dotnet(raw: Any, source_tz: tzinfo | None) -> datetime:
    found = _DOTNET.match(raw) if isinstance(raw, str) else None
    if found is None:
        raise ValueError
    millis, sign, hours, minutes = found.groups()
    instant = _epoch(int(millis), 1_000)
    if sign is not None:  # the offset shows where the reading was taken; the instant is UTC
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return instant.astimezone(timezone(-delta if sign == "-" else delta))
    return instant.astimezone(source_tz) if source_tz is not None else instant
