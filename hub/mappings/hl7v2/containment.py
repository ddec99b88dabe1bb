"""Reading an ORU's OBX rows: containment paths, times, codes, and the IHE PCD-01 device tree.

Shared by ``oru`` (which turns metric rows into measurements). ``Row`` is one OBX with its OBR
group and parsed OBX-4 path; ``Context`` what every row lookup needs (tables, sender map, zone,
delimiters, the message's patient and gateway). Device rows (OBX-4 ``MDS[.VMD[.CHAN]]`` with no
value) become Devices whose ``parent`` points up the tree; a level numbered 0 ("not used") is
skipped; the MDS is identified by the first OBX-18 under it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import lru_cache, partial
from typing import Any

from hub.contracts import Code, Concept, Extraction, Identifier, ReportDraft
from hub.errors import DataError
from hub.fhir.ids import registry_id, stable_id
from hub.hl7v2 import EncodingChars, Message, Segment
from hub.mappings.hl7v2.codes import LOINC, MDC, system_uri
from hub.mappings.hl7v2.identifiers import EUI64_SYSTEM, equipment
from hub.mappings.hl7v2.tables import CompiledSender, Hl7v2Maps, Target
from hub.mappings.hl7v2.times import Hl7Time, parse_dtm

HL7V2_REF = "hl7v2@v1"

PATH = re.compile(r"\d+(?:\.\d+)*\Z")
SYSID_TYPE = {"coding": [{"system": "http://hl7.org/fhir/uv/phd/CodeSystem/"
                                     "ContinuaDeviceIdentifiers",
                           "code": "SYSID", "display": "IEEE 11073 System Identifier"}]}
HL7V2_REF = "hl7v2@v1"


OBX_FIELDS = 21  # Row.raw: OBX-0 (the name)..OBX-20, every field the mapping reads
MISSING: Any = object()  # not in the memo; of a Row's field: not read yet
MEMO_LIMIT = 50_000  # entries; cleared when full (a sender cycling through ids must not grow it)


def memo(maps: Hl7v2Maps, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``key`` for this mapping set: lookups that depend only on field
    text, the delimiters and the tables. Measured on the 6-OBX PCD-01 ORU of bench.hl7_mllp:
    the ORU extraction went from ~300 to ~110 us CPU per message."""
    table = maps.memo
    found = table.get(key, MISSING)
    if found is MISSING:
        if len(table) >= MEMO_LIMIT:
            table.clear()
        found = table[key] = compute()
    return found



@dataclass(frozen=True, slots=True)
class RowCode:
    """What OBX-3 says: its codings, its text, and the table target they map to."""

    codings: tuple[Code, ...]
    text: str | None
    target: Target | None


@dataclass(slots=True)
class Row:
    seg: Segment
    index: int  # 1-based among the message's OBX segments
    group: int  # OBR group (0: OBX before any OBR)
    obr_time: Hl7Time | None
    path: tuple[int, ...] | None
    device_row: bool  # a containment row: no value type, no value, MDS[.VMD[.CHAN]]
    raw: list[str]  # OBX-0..OBX-20 as Segment.raw reads them (one copy, not a call a field)
    notes: list[str] = field(default_factory=list)
    code: RowCode | None = None  # OBX-3, read once
    equipment: Identifier | object | None = MISSING  # OBX-18 (equipment_of), read once


@dataclass(slots=True)
class Context:
    maps: Hl7v2Maps
    sender: CompiledSender | None
    local: str
    zone: tzinfo
    msh_time: Hl7Time | None
    patient: Identifier | None
    gateway: Identifier | None
    sender_ident: Identifier
    component_sep: str
    encoding: EncodingChars
    prefix: str
    times: dict[tuple[int, tuple[int, ...]], Hl7Time | None] = field(default_factory=dict)
    mds_equipment: dict[tuple[int, int], Identifier] = field(default_factory=dict)
    reports: dict[int, ReportDraft] = field(default_factory=dict)  # OBR group → its report
    # id(device) → (device, is equipment, gateway to name): oru._metric, once per device object
    device_roles: dict[int, tuple[Identifier, bool, Identifier | None]] = field(
        default_factory=dict)


def read_rows(msg: Message, ctx: Context, out: Extraction) -> list[Row]:
    rows: list[Row] = []
    group, obr_time = 0, None
    last: Row | None = None
    for seg in msg.segments:
        name = seg.name
        if name == "OBR":
            group += 1
            last = None
            try:
                obr_time = parse_dtm(seg.component(7, 1), ctx.zone)
            except ValueError:
                out.errors.append(DataError("OBR-7 is not a valid date/time",
                                            location=f"{ctx.prefix}OBR[{group}]-7"))
                obr_time = None
        elif name == "OBX":
            raw = seg.raw_fields(OBX_FIELDS)
            key = ("path", raw[4], ctx.encoding)
            path: tuple[int, ...] | None = ctx.maps.memo.get(key, MISSING)
            if path is MISSING:
                path = memo(ctx.maps, key, partial(_path, seg))
            device_row = (path is not None and len(path) <= 3 and not raw[2].strip()
                          and not raw[5].strip())
            last = Row(seg, len(rows) + 1, group, obr_time, path, device_row, raw)
            rows.append(last)
        elif name == "NTE" and last is not None:
            text = "\n".join(r.text for r in seg.repetitions(3)).strip()
            if text and text != '""':
                last.notes.append(text)
        elif name != "NTE":
            last = None
    return rows


def _path(seg: Segment) -> tuple[int, ...] | None:
    sub = seg.field(4).strip()
    return tuple(int(p) for p in sub.split(".")) if PATH.match(sub) else None


def where(ctx: Context, row: Row, n: int | None = None) -> str:
    return f"{ctx.prefix}OBX[{row.index}]" + (f"-{n}" if n is not None else "")


def row_time(row: Row, ctx: Context) -> Hl7Time | None:
    key = (row.group, row.path or (-row.index,))
    if key in ctx.times:
        return ctx.times[key]
    try:  # most rows leave OBX-14 empty (PCD-01: only the channel's): no accessor then
        own = parse_dtm(row.seg.component(14, 1), ctx.zone) if row.raw[14] else None
    except ValueError:
        raise DataError("OBX-14 is not a valid date/time", location=where(ctx, row, 14)) from None
    if own is None and row.path is not None:
        for depth in range(len(row.path) - 1, 0, -1):
            inherited = ctx.times.get((row.group, row.path[:depth]))
            if inherited is not None:
                own = inherited
                break
    ctx.times[key] = own
    return own


def device_tree(rows: list[Row], ctx: Context, devices: dict[str, dict[str, Any]]) -> None:
    """MDS equipment per (group, MDS), and a Device per containment row."""
    for row in rows:
        if row.path is None:
            continue
        found = row.equipment = equipment_of(row, ctx)
        if found is not None:
            ctx.mds_equipment.setdefault((row.group, row.path[0]), found)
            ctx.mds_equipment.setdefault((0, row.path[0]), found)
        if row.device_row:
            # try/except, not suppress(): a context manager per device row cost ~0.4 % of
            # bench.hl7_cost prepare. Channel times are inherited by their metrics.
            try:  # noqa: SIM105
                row_time(row, ctx)
            except DataError:  # a bad device-row time only loses the inheritance
                pass
    for row in rows:
        if not row.device_row or row.path is None or row.path[-1] == 0:
            continue
        mds = mds_identity(row, ctx)
        code = row_code(row, ctx).codings
        device: dict[str, Any] = {"resourceType": "Device"}
        if len(row.path) == 1:
            device.update(identified(mds))
        else:
            parent_path = tuple(p for p in row.path[:-1])
            while parent_path and parent_path[-1] == 0:
                parent_path = parent_path[:-1]
            parent = (device_id(mds) if len(parent_path) <= 1
                      else part_id(mds, parent_path))
            device["id"] = part_id(mds, row.path)
            device["parent"] = {"reference": f"Device/{parent}"}
        if code:
            device["type"] = concept_json(Concept(code))
        existing = devices.get(device["id"])
        if existing is None or "type" not in existing:
            devices[device["id"]] = device
        if len(row.path) > 1 and device_id(mds) not in devices:
            devices[device_id(mds)] = {"resourceType": "Device", **identified(mds)}


@lru_cache(maxsize=4096)
def device_id(ident: Identifier) -> str:
    return registry_id("Device", ident)


@lru_cache(maxsize=4096)
def part_id(mds: Identifier, path: tuple[int, ...]) -> str:
    return stable_id("Device", mds.token(), ".".join(str(p) for p in path))


def identified(ident: Identifier) -> dict[str, Any]:
    entry: dict[str, Any] = {"system": ident.system, "value": ident.value}
    if ident.system == EUI64_SYSTEM:
        entry = {"type": SYSID_TYPE, **entry}
    return {"id": device_id(ident), "identifier": [entry]}


def mds_identity(row: Row, ctx: Context) -> Identifier:
    if row.path is not None:
        for key in ((row.group, row.path[0]), (0, row.path[0])):
            if key in ctx.mds_equipment:
                return ctx.mds_equipment[key]
    return ctx.gateway or ctx.sender_ident


def components(seg: Segment, n: int, ctx: Context) -> list[str]:
    """Components of field ``n`` (first repetition, first subcomponents), each read once.

    The hot path reads OBX-3 and OBX-6 components several times; one split instead of one
    accessor call per component. A field with an escape sequence takes the accessor's path.
    """
    raw = seg.raw(n)
    if not raw:
        return []
    enc = ctx.encoding
    if enc.escape in raw:
        count = raw.split(enc.repetition, 1)[0].count(enc.component) + 1
        return [seg.component(n, m) for m in range(1, count + 1)]
    first = raw.split(enc.repetition, 1)[0]
    return [part.split(enc.subcomponent, 1)[0] for part in first.split(enc.component)]


def nth(parts: list[str], m: int) -> str:
    return parts[m - 1].strip() if m <= len(parts) else ""


def equipment_of(row: Row, ctx: Context) -> Identifier | None:
    """The first repetition of OBX-18 that names equipment (``identifiers.equipment``)."""
    raw = row.raw[18]
    if not raw:
        return None
    # Escapes (\X..\ in the message's charset) are rare; their text is not cached.
    if ctx.encoding.escape in raw:
        return _equipment(row.seg)
    key = ("equipment", raw, ctx.encoding)
    found = ctx.maps.memo.get(key, MISSING)
    return (memo(ctx.maps, key, partial(_equipment, row.seg))  # type: ignore[no-any-return]
            if found is MISSING else found)


def _equipment(seg: Segment) -> Identifier | None:
    return next((found for rep in seg.repetitions(18)
                 if (found := equipment(rep)) is not None), None)


def row_code(row: Row, ctx: Context) -> RowCode:
    """OBX-3 of ``row``: codings (primary and alternate triplet), text, target."""
    if row.code is None:
        raw = row.raw[3]
        if ctx.encoding.escape in raw:
            row.code = _row_code(row.seg, ctx)
        else:
            sender = ctx.sender.name if ctx.sender is not None else None
            key = ("code", raw, ctx.encoding, ctx.local, sender)
            found = ctx.maps.memo.get(key, MISSING)
            row.code = (memo(ctx.maps, key, lambda: _row_code(row.seg, ctx))
                        if found is MISSING else found)
    return row.code


def _row_code(seg: Segment, ctx: Context) -> RowCode:
    parts = components(seg, 3, ctx)
    out: list[Code] = []
    for first in (1, 4):
        code = nth(parts, first)
        if code:
            system = system_uri(nth(parts, first + 2), ctx.local)
            display = nth(parts, first + 1) or None
            if display is None and system == MDC and (known := ctx.maps.mdc.get(code)):
                display = known.display
            out.append(Code(system, code, display))
    codings = tuple(out)
    return RowCode(codings, nth(parts, 2) or None, target_of(codings, ctx))


def codings_of(row: Row, ctx: Context) -> tuple[Code, ...]:
    return row_code(row, ctx).codings


def target_of(codings: tuple[Code, ...], ctx: Context) -> Target | None:
    for coding in codings:
        if coding.system == MDC:
            found = ctx.maps.mdc.get(coding.code)
        elif coding.system == LOINC:
            name = ctx.maps.loinc_types.get(coding.code)
            found = Target(type=name, mapping=HL7V2_REF) if name else None
        elif ctx.sender is not None and coding.system == ctx.local:
            found = ctx.sender.codes.get(coding.code)
        else:
            found = None
        if found is not None:
            return found
    return None


def concept_json(value: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.codings:
        out["coding"] = [{k: v for k, v in (("system", c.system), ("code", c.code),
                                            ("display", c.display)) if v is not None}
                         for c in value.codings]
    if value.text:
        out["text"] = value.text
    return out
