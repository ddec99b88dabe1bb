"""ORU^R01 (and IHE PCD-01) → measurements and the devices that took them.

Walks OBR groups and their OBX rows in message order:

- **Device rows** (IHE PCD-01): OBX-4 ``MDS[.VMD[.CHAN]]`` with no value type and no value
  describe the containment tree; they become Devices (``parent`` pointing up the tree) and
  produce no Observation. A level numbered 0 is "not used" and skipped.
- **Metric rows** become measurements. The OBX-3 code picks the target (``tables.Target``): MDC
  codes through ``mdc.yaml``, the sender's local codes through its sender map, LOINC codes of a
  catalogue type directly; any other code is kept as sent, its value typed by OBX-2.
- **Device identity** of a reading: the EUI-64 in its own OBX-18, else its MDS row's, else the
  gateway's (MSH-3 naming an EUI-64), else the sending system (MSH-3/MSH-4), which is
  then not written as the Observation's device.
- **Effective time**: OBX-14, else the nearest containment ancestor's OBX-14, else OBR-7, else
  MSH-7; times without an offset are read at MSH-7's offset, else the default time zone.
- **Panels**: systolic, diastolic (and mean) rows of one channel at one instant, with the same
  status and nothing row-specific (reference range, flags, comparator, method, notes), become
  one panel reading (the BP panel 85354-9 with components); otherwise each stays on its own so
  nothing is lost.

Problems with one OBX become an error naming ``OBX[n]-field`` (n counts OBX segments in the
message) and the rest of the message still converts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from hub.contracts import (
    Code,
    Concept,
    Extraction,
    Identifier,
    Measurement,
    ObservationDetail,
    ObservedValue,
    Quantity,
    ReferenceRange,
)
from hub.errors import DataError
from hub.hl7v2 import Message, Segment
from hub.mappings.hl7v2.codes import (
    INTERPRETATION,
    INTERPRETATION_CODES,
    LOINC,
    RESULT_STATUS,
    UCUM,
    UNKNOWN_STATUS,
    local_system,
    safe_code,
)
from hub.mappings.hl7v2.containment import (
    HL7V2_REF,
    MISSING,
    Context,
    Row,
    RowCode,
    components,
    device_id,
    device_tree,
    equipment_of,
    identified,
    mds_identity,
    memo,
    nth,
    read_rows,
    row_code,
    row_time,
    where,
)
from hub.mappings.hl7v2.identifiers import (
    facility_system,
    hd_eui64,
    patient_identifier,
    sender_identifier,
)
from hub.mappings.hl7v2.report import report_drafts
from hub.mappings.hl7v2.tables import CompiledSender, Hl7v2Maps
from hub.mappings.hl7v2.times import offset_zone, parse_dtm
from hub.mappings.hl7v2.values import (
    SUPPORTED,
    Unsupported,
    concept,
    number,
    observed_value,
    reference_range,
    split_comparator,
)
from hub.mappings.schema import TypeSpec


@dataclass(slots=True)
class _Part:
    """A candidate panel component, held back until its siblings are known."""

    slot: int
    measurement: Measurement
    input: str
    value: int | float
    codings: tuple[Code, ...]


def extract_oru(msg: Message, maps: Hl7v2Maps, sender: CompiledSender | None,
                out: Extraction, prefix: str = "") -> None:
    """Append the message's measurements, devices and per-OBX errors to ``out``."""
    msh = msg.msh
    msh7 = msh.component(7, 1)
    zone = offset_zone(msh7) or maps.default_tz
    try:
        msh_time = parse_dtm(msh7, zone)
    except ValueError:
        raise DataError("MSH-7 is not a valid date/time", location=f"{prefix}MSH-7") from None
    pid = msg.segment("PID")
    texts = (msh.raw(3), msh.raw(4), pid.raw(3) if pid is not None else "")
    esc = msg.encoding.escape
    header: _Header = (
        _header(msg, maps, sender) if esc in texts[0] or esc in texts[1] or esc in texts[2]
        else memo(maps, ("header", *texts, pid is None, msg.encoding,
                         sender.name if sender else None), partial(_header, msg, maps, sender)))
    ctx = Context(maps, sender, header.local, zone, msh_time, header.patient, header.gateway,
                  header.sender, msg.encoding.component, msg.encoding, prefix)
    rows = read_rows(msg, ctx, out)
    if not rows:
        raise DataError("the ORU^R01 holds no OBX segment", location=f"{prefix}OBX")
    ctx.reports = report_drafts(msg, ctx, out)
    devices: dict[str, dict[str, Any]] = {}
    device_tree(rows, ctx, devices)
    slots: list[Measurement | None] = []
    parts: dict[tuple[Any, ...], list[_Part]] = {}
    for row in rows:
        if row.device_row:
            continue
        try:
            _metric(row, ctx, slots, parts, devices)
        except DataError as exc:
            out.errors.append(exc)
    _group_panels(parts, slots, rows, ctx)
    out.measurements.extend(m for m in slots if m is not None)
    out.devices.extend(devices.values())


@dataclass(frozen=True, slots=True)
class _Header:
    """What MSH-3/MSH-4 and PID-3 say, the same in every message of one sender and patient."""

    local: str  # the system of the sender's local codes
    patient: Identifier | None
    gateway: Identifier | None  # MSH-3 naming an EUI-64
    sender: Identifier  # the sending system as a device identity


def _header(msg: Message, maps: Hl7v2Maps, sender: CompiledSender | None) -> _Header:
    msh = msg.msh
    application, facility = msh.component(3, 1).strip(), msh.component(4, 1).strip()
    local = (sender.code_system if sender and sender.code_system
             else local_system(facility, application))
    reps = msh.repetitions(3)
    return _Header(local, _patient(msg, maps), hd_eui64(reps[0] if reps else None),
                   sender_identifier(application, facility))


def _patient(msg: Message, maps: Hl7v2Maps) -> Identifier | None:
    pid = msg.segment("PID")
    if pid is None:
        return None
    msh = msg.msh
    fac_sys = facility_system(msh.component(4, 1).strip(), msh.component(3, 1).strip())
    found = [f for rep in pid.repetitions(3)
             if (f := patient_identifier(rep, maps.settings.assigning_authorities, fac_sys))]
    if not found:
        return None
    for wanted in maps.settings.patient_identifier_types:
        for ident, id_type in found:
            if id_type.upper() == wanted:
                return ident
    return found[0][0]


def _delimited(raw: str, ctx: Context) -> bool:
    enc = ctx.encoding
    return (enc.component in raw or enc.repetition in raw or enc.escape in raw
            or enc.subcomponent in raw)


def _field(row: Row, n: int, ctx: Context) -> str:
    """Field ``n`` as ``Segment.field`` reads it; a field without delimiters or escapes (a
    value type, a status) is its raw text, without the lookup."""
    raw = row.raw[n]
    return row.seg.field(n) if _delimited(raw, ctx) else raw


def _number(raw: str, ucum: str | None, unit_text: str | None, ctx: Context
            ) -> Quantity | None:
    """OBX-5 (``raw``) of an NM row as ``values.observed_value`` reads it, for the common case
    of one plain number (None otherwise: the general path decides)."""
    if not raw.strip() or _delimited(raw, ctx):
        return None
    comparator, text = split_comparator(raw)
    return Quantity(number(text), ucum, unit_text, comparator)


def _unit(seg: Segment, raw: str, ctx: Context) -> tuple[str | None, str | None]:
    """OBX-6 (``raw``) → (UCUM code if known, the sender's unit text otherwise)."""
    if not raw:
        return None, None
    if ctx.encoding.escape in raw:
        return _read_unit(seg, ctx)
    sender = ctx.sender.name if ctx.sender is not None else None
    found: tuple[str | None, str | None] = memo(ctx.maps, ("unit", raw, ctx.encoding, sender),
                                                lambda: _read_unit(seg, ctx))
    return found


def _read_unit(seg: Segment, ctx: Context) -> tuple[str | None, str | None]:
    parts = components(seg, 6, ctx)
    code, text, system = nth(parts, 1), nth(parts, 2), nth(parts, 3).upper()
    if not code and not text:
        return None, None
    if system == "MDC":
        found = ctx.maps.mdc_units.get(code) or ctx.maps.mdc_units.get(text)
        return (found, None) if found else (None, text or code)
    if system == "UCUM":
        return code, None
    if ctx.sender is not None and (found := ctx.sender.units.get(code)):
        return found, None
    return None, code or text


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a metric row's static fields decide: OBX-3 (code, target), OBX-2 (the value type
    as sent), OBX-6 (unit) and OBX-11 (status). A monitor repeats them in every message, so
    ``_plan`` reads them once per sender, delimiters and text (``memo``)."""

    code: RowCode
    value_type: str  # OBX-2 stripped and upper-cased; "" when not sent
    ucum: str | None
    unit_text: str | None
    status: str | None
    absent: str | None
    numeric: tuple[str, TypeSpec] | None  # the target's catalogue type, if it takes a quantity


def _plan(row: Row, ctx: Context) -> _Plan:
    """``row``'s plan: memoised on the raw text of OBX-2/3/6/11 with everything else the
    reading depends on (delimiters, the local code system, the sender map; the memo belongs
    to one mapping set). A field with an escape sequence is read afresh, as ``row_code`` and
    ``_unit`` do. Measured on bench.hl7_cost prepare: see the commit message."""
    raw = row.raw
    texts = (raw[2], raw[3], raw[6], raw[11])
    esc = ctx.encoding.escape
    if esc in texts[0] or esc in texts[1] or esc in texts[2] or esc in texts[3]:
        return _read_plan(row, ctx)
    key = ("plan", *texts, ctx.encoding, ctx.local,
           ctx.sender.name if ctx.sender is not None else None)
    found = ctx.maps.memo.get(key, MISSING)
    if found is MISSING:
        found = memo(ctx.maps, key, partial(_read_plan, row, ctx))
    row.code = found.code
    return found  # type: ignore[no-any-return]


def _read_plan(row: Row, ctx: Context) -> _Plan:
    seg = row.seg
    code = row_code(row, ctx)
    ucum, unit_text = _unit(seg, row.raw[6], ctx)
    status, absent = RESULT_STATUS.get(_field(row, 11, ctx).strip().upper(), UNKNOWN_STATUS)
    target = code.target
    name = target.type if target is not None else None
    spec = ctx.maps.types.get(name) if name else None
    return _Plan(code, _field(row, 2, ctx).strip().upper(), ucum, unit_text, status, absent,
                 (name, spec) if name and spec is not None
                 and spec.value in ("quantity", "integer") else None)


def _metric(row: Row, ctx: Context, slots: list[Measurement | None],
            parts: dict[tuple[Any, ...], list[_Part]], devices: dict[str, dict[str, Any]]
            ) -> None:
    seg = row.seg
    plan = _plan(row, ctx)
    code = plan.code
    codings = code.codings
    if not codings:
        raise DataError("OBX-3 observation identifier is missing", location=where(ctx, row, 3))
    raw = row.raw
    value_type = plan.value_type
    if not value_type and raw[5].strip():
        value_type = "CWE" if ctx.component_sep in raw[5] else "ST"
    if value_type and value_type not in SUPPORTED:
        raise DataError(f"OBX-2 value type {safe_code(value_type)} is not converted "
                        "(supported: NM SN ST TX FT CWE CE CNE DTM DT TS NA MA)",
                        location=where(ctx, row, 2))
    ucum, unit_text = plan.ucum, plan.unit_text
    zone = ctx.zone
    try:
        value = (_number(raw[5], ucum, unit_text, ctx) if value_type == "NM" else None) or \
            observed_value(seg, value_type, ucum, unit_text, zone, ctx.local, ctx.component_sep)
    except Unsupported as exc:
        raise DataError(str(exc), location=where(ctx, row, 5)) from None
    except ValueError:
        raise DataError(f"OBX-5 is not a valid {value_type} value",
                        location=where(ctx, row, 5)) from None
    status, absent = plan.status, plan.absent
    when = row_time(row, ctx) or row.obr_time or ctx.msh_time
    if when is None:
        raise DataError("no time: OBX-14, OBR-7 and MSH-7 are all empty",
                        location=where(ctx, row, 14))
    device = _equipment_of(row, ctx)
    # What a device decides is the same for each of its rows: decided once a message, by the
    # object (the memo hands every row the same Identifier). Identifier's hash and equality
    # are Python calls; four a row were ~1.5 % of bench.hl7_cost prepare.
    seen = ctx.device_roles.get(id(device))
    if seen is None:
        is_equipment = device != ctx.sender_ident
        for ident in (device if is_equipment else None, ctx.gateway):
            if ident is not None and (rid := device_id(ident)) not in devices:
                devices[rid] = {"resourceType": "Device", **identified(ident)}
        gateway = ctx.gateway if ctx.gateway is not None and ctx.gateway != device else None
        # (the entry holds the device, so its id() cannot be reused within the message)
        ctx.device_roles[id(device)] = (device, is_equipment, gateway)
    else:
        _, is_equipment, gateway = seen
    location = f"{ctx.prefix}OBX[{row.index}]"  # where(ctx, row), without the call
    target = code.target
    # most OBX leave 7, 8, 17 and 20 empty: skip them without a lookup
    detail = ObservationDetail(
        codings=codings,
        code_text=code.text,
        absent_reason=absent if value is None else None,
        reference_range=_ranges(seg, ucum, unit_text) if raw[7] else (),
        interpretation=_interpretations(seg) if raw[8] else (),
        method=_merged_concept(seg, 17, ctx.local) if raw[17] else None,
        body_site=_merged_concept(seg, 20, ctx.local) if raw[20] else None,
        notes=tuple(row.notes),
        effective_text=when.fhir() if when.precision in ("year", "month", "day") else None,
        device_is_equipment=is_equipment,
        gateway=gateway,
        report=ctx.reports.get(row.group),
    )
    m = Measurement(type="", time=when.when, device=device, values={}, patient=ctx.patient,
                    mapping=target.mapping if target else HL7V2_REF,
                    location=location, status=status, detail=detail)
    if plan.numeric is not None:
        type_name, spec = plan.numeric
        quantity = _as_quantity(value, ucum, unit_text)
        if value is not None and quantity is None:
            raise DataError(f"OBX-5 is not a number, but its code maps to {type_name}",
                            location=where(ctx, row, 5))
        m.type = type_name
        if quantity is not None:
            m.values = {spec.input: quantity.value}
            m.unit = quantity.unit or quantity.unit_text
            detail.comparator = quantity.comparator
    else:
        m.type = f"{codings[0].system}|{codings[0].code}"
        if row.path is not None:
            m.type += f"@{'.'.join(map(str, row.path))}"
        if value_type == "ST" and (ucum or unit_text):
            # Monitors send numbers as ST with a unit in OBX-6: keep them numbers.
            value = _as_quantity(value, ucum, unit_text) or value
        detail.value = value
        if target is not None:
            detail.codings = codings + target.codes
            detail.category = target.category
        elif codings[0].system == LOINC:
            detail.category = "laboratory"
    slots.append(m)
    if (target is not None and target.panel_type and target.panel_input
            and m.values and _plain(detail)):
        key = (row.group, row.path[:3] if row.path and len(row.path) >= 4 else None,
               m.time, target.panel_type, status, m.unit)
        parts.setdefault(key, []).append(
            _Part(len(slots) - 1, m, target.panel_input, next(iter(m.values.values())), codings))


def _plain(detail: ObservationDetail) -> bool:
    return not (detail.comparator or detail.reference_range or detail.interpretation
                or detail.method or detail.body_site or detail.notes)


def _as_quantity(value: ObservedValue | None, ucum: str | None, unit_text: str | None
                 ) -> Quantity | None:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, str):  # ST from a monitor that sends numbers as text
        try:
            return Quantity(number(value), ucum, unit_text)
        except ValueError:
            return None
    return None


def _equipment_of(row: Row, ctx: Context) -> Identifier:
    found = row.equipment if row.equipment is not MISSING else equipment_of(row, ctx)
    return found or mds_identity(row, ctx)  # type: ignore[return-value]


def _ranges(seg: Segment, ucum: str | None, unit_text: str | None
            ) -> tuple[ReferenceRange, ...]:
    found = reference_range(seg.text(7), ucum, unit_text)
    return () if found is None else (found,)


def _interpretations(seg: Segment) -> tuple[Concept, ...]:
    out: list[Concept] = []
    for rep in seg.repetitions(8):
        code = rep.component(1).strip()
        if not code or code == '""':
            continue
        if code in INTERPRETATION_CODES:
            out.append(Concept((Code(INTERPRETATION, code),), rep.component(2).strip() or None))
        else:
            out.append(Concept((), rep.component(2).strip() or code))
    return tuple(out)


def _merged_concept(seg: Segment, n: int, local: str) -> Concept | None:
    found = [concept(rep, local) for rep in seg.repetitions(n)]
    codings = tuple(c for f in found for c in f.codings)
    text = next((f.text for f in found if f.text), None)
    return Concept(codings, text) if codings or text else None


def _group_panels(parts: dict[tuple[Any, ...], list[_Part]], slots: list[Measurement | None],
                  rows: list[Row], ctx: Context) -> None:
    for key, found in parts.items():
        panel_type = key[3]
        spec = ctx.maps.types[panel_type]
        inputs = [p.input for p in found]
        required = {c.input for c in spec.components if c.required}
        if len(set(inputs)) != len(inputs) or not required <= set(inputs):
            continue  # incomplete or ambiguous: each part stays a reading of its own
        first = found[0].measurement
        detail = first.detail or ObservationDetail()
        panel_codes = _panel_codings(key, rows, ctx, panel_type)
        panel = Measurement(
            type=panel_type, time=first.time, device=first.device,
            values={p.input: p.value for p in found}, unit=first.unit, patient=first.patient,
            mapping=first.mapping, location=first.location, status=first.status,
            detail=ObservationDetail(
                codings=panel_codes, component_codings={p.input: p.codings for p in found},
                effective_text=detail.effective_text,
                device_is_equipment=detail.device_is_equipment, gateway=detail.gateway,
                report=detail.report),
        )
        slots[found[0].slot] = panel
        for part in found[1:]:
            slots[part.slot] = None


def _panel_codings(key: tuple[Any, ...], rows: list[Row], ctx: Context, panel_type: str
                   ) -> tuple[Code, ...]:
    group, channel = key[0], key[1]
    if channel is None:
        return ()
    for row in rows:
        if row.device_row and row.group == group and row.path == channel:
            code = row_code(row, ctx)
            if code.target is not None and code.target.names_panel == panel_type:
                return code.codings
    return ()


__all__ = ["UCUM", "extract_oru"]
