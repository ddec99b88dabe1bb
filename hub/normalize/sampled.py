"""High-rate readings as one Observation per period holding FHIR R4 SampledData (pure functions).

As Azure iomt-fhir's ``periodInterval`` does (its ``SampledDataProcessor``): a period starts on a
UTC boundary of its length, slot *i* holds the reading taken in ``[start + i*every, start +
(i+1)*every)``, ``E`` marks a slot without one, and when two readings land in one slot the later
wins. FHIR R4 SampledData (http://hl7.org/fhir/R4/datatypes.html#SampledData): ``origin`` is the
zero value with the unit (here value 0: the data are the readings themselves, ``factor`` 1),
``period`` the milliseconds between samples, ``dimensions`` 1, ``data`` decimals separated by
single spaces, with ``E`` (error / no value), ``L`` and ``U`` (below / above the detection
limit) allowed in place of a number.

The Observation's id is deterministic in device, patient, type, period start and grouping, so
every reading of a period, in whatever message it arrives, lands in the same resource; merging a
late reading into a stored period is ``merge_data`` (the store's part: hub.store.sampled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hub.fhir.ids import stable_id, urn_identifier
from hub.mappings.layouts import SampledGrouping

EMPTY = "E"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Window:
    """One period of a grouping: its UTC start (epoch ms) and slot layout."""

    start_ms: int
    every_ms: int
    slots: int

    @property
    def start(self) -> datetime:
        return _EPOCH + self.start_ms * _MS

    @property
    def end(self) -> datetime:
        """The last millisecond of the period (FHIR Period.end is inclusive, so adjacent
        periods do not overlap in date searches)."""
        return _EPOCH + (self.start_ms + self.every_ms * self.slots - 1) * _MS


def locate(when: datetime, grouping: SampledGrouping) -> tuple[Window, int]:
    """The period holding the instant ``when``, and the slot within it."""
    at_ms = (when - _EPOCH) // _MS
    per_ms, every_ms = grouping.per_ms, grouping.every_ms
    start_ms = at_ms - at_ms % per_ms  # floor, also before 1970
    return Window(start_ms, every_ms, per_ms // every_ms), (at_ms - start_ms) // every_ms


def group_id(device_token: str, patient_id: str | None, mtype: str, window: Window) -> str:
    """Identity of a period Observation (the grouping is part of it: changing `every` or `per`
    starts new Observations instead of mixing layouts)."""
    return stable_id("Observation", device_token, patient_id or "", mtype, "sampled",
                     str(window.start_ms), f"{window.every_ms}x{window.slots}")


def data_token(value: int | float) -> str:
    """A reading as a SampledData decimal: plain notation (never ``1e-05``), as written."""
    if isinstance(value, int):
        return str(value)
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


def parse_data(text: str | None, slots: int) -> list[str]:
    """A stored ``data`` string as its slot tokens (padded with ``E`` / cut to ``slots``)."""
    tokens = text.split(" ") if text else []
    return (tokens + [EMPTY] * slots)[:slots]


def merge_data(stored: list[str], readings: dict[int, str]) -> tuple[list[str], bool]:
    """Slots with the new readings written over the stored ones (the later reading wins, as in
    iomt-fhir); also whether anything changed."""
    merged = list(stored)
    changed = False
    for slot, token in readings.items():
        if merged[slot] != token:
            merged[slot] = token
            changed = True
    return merged, changed


def period_observation(
    template: dict[str, Any], rid: str, window: Window, data: list[str], status: str
) -> dict[str, Any]:
    """The period Observation, shaped after one of its readings' Observations (``template``,
    built by hub.normalize.observation): same codes, category, subject, device and lineage;
    ``effectivePeriod`` and ``valueSampledData`` instead of the instant and the quantity.

    The reading's ``meta.profile`` is not kept: the catalogue's profiles (vital signs, CGM sensor
    reading) require ``valueQuantity``.
    """
    quantity = template["valueQuantity"]
    meta = {k: v for k, v in template["meta"].items() if k != "profile"}
    obs: dict[str, Any] = {"resourceType": "Observation", "id": rid, "meta": meta,
                           "identifier": [urn_identifier(rid)], "status": status}
    for key in ("category", "code", "subject"):
        if key in template:
            obs[key] = template[key]
    obs["effectivePeriod"] = {"start": window.start.isoformat(),
                              "end": window.end.isoformat(timespec="milliseconds")}
    obs["device"] = template["device"]
    obs["valueSampledData"] = {
        "origin": {"value": 0, **{k: v for k, v in quantity.items() if k != "value"}},
        "period": window.every_ms,
        "dimensions": 1,
        "data": " ".join(data),
    }
    return obs
