"""HL7 v2 date/times (DTM, and TS component 1) → aware datetimes, keeping their precision.

``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``. A value without an offset is read on the
message's clock: the offset of MSH-7 when MSH-7 has one, else the hub's default time zone
(HUB_DEFAULT_TIMEZONE) — the sender's wall clock is the only reading that makes sense of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache

_DTM = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?\Z")


@dataclass(frozen=True, slots=True)
class Hl7Time:
    """A parsed DTM: the aware instant (missing parts filled with their first value), how much
    of it the sender gave, and whether it carried its own offset."""

    when: datetime
    precision: str  # year | month | day | minute | second
    has_offset: bool

    def fhir(self) -> str:
        """FHIR dateTime text at the sender's precision (minutes gain ``:00``, as FHIR needs
        seconds once a time is given)."""
        if self.precision == "year":
            return f"{self.when.year:04d}"
        if self.precision == "month":
            return f"{self.when.year:04d}-{self.when.month:02d}"
        if self.precision == "day":
            return self.when.date().isoformat()
        return self.when.isoformat()


def offset_zone(text: str) -> tzinfo | None:
    """The zone of ``+HHMM`` / ``-HHMM`` at the end of a DTM, if it has one."""
    found = _DTM.match(text.strip())
    if found is None or found.group(8) is None:
        return None
    return _zone(found.group(8))


@lru_cache(maxsize=256)
def _zone(offset: str) -> tzinfo:
    sign = -1 if offset[0] == "-" else 1
    delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    if delta >= timedelta(hours=24):
        raise ValueError("offset out of range")
    return timezone(sign * delta)


# Memoised by (text, zone): a PCD-01 message repeats one OBX-14 on every row (and OBR-7,
# MSH-7), each read once per row; Hl7Time and its datetime are immutable. (An invalid DTM
# raises again each time: lru_cache keeps no exceptions.)
@lru_cache(maxsize=1024)
def parse_dtm(text: str, zone: tzinfo) -> Hl7Time | None:
    """Parse a DTM; None for an empty value; ValueError when it is not a valid DTM.

    ``zone`` places values that carry no offset (see module docstring).
    """
    value = text.strip()
    if not value or value == '""':
        return None
    return _parse(value, zone)


def _parse(value: str, zone: tzinfo) -> Hl7Time:
    found = _DTM.match(value)
    if found is None:
        raise ValueError("not an HL7 DTM")
    year, month, day, hour, minute, second, fraction, offset = found.groups()
    if hour is not None and minute is None:
        minute = "00"  # YYYYMMDDHH: read as the whole hour
    micro = int((fraction or "0").ljust(6, "0")[:6])
    tz = _zone(offset) if offset is not None else zone
    when = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                    int(second or 0), micro, tzinfo=tz)
    if hour is not None:
        precision = "second" if second is not None else "minute"
    else:
        precision = "day" if day is not None else ("month" if month is not None else "year")
    return Hl7Time(when, precision, offset is not None)
