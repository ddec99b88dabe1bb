"""ORU^R01 OBR → DiagnosticReport drafts (lab-style results; IHE PCD-01 device data excluded).

Field by field, per the HL7 v2-to-FHIR IG's ConceptMap "Segment OBR to DiagnosticReport"
(http://hl7.org/fhir/uv/v2mappings/ConceptMap/segment-obr-to-diagnosticreport, STU1):

- OBR-2 placer / OBR-3 filler order number → ``identifier`` typed PLAC / FILL (table 0203); the
  preceding ORC-2 / ORC-3 stand in when the OBR leaves them empty (v2.5 §4.5.1: the two carry
  the same order numbers);
- OBR-4 → ``code`` (required: an OBR without OBR-4 gives no report);
- OBR-7 → ``effectiveDateTime``, or ``effectivePeriod`` start with OBR-8 as its end;
- OBR-22 → ``issued`` (an instant: needs at least minutes);
- OBR-24 → ``category`` (table 0074);
- OBR-25 → ``status`` through the IG's ConceptMap "table 0123 to diagnostic-report-status":
  O/I/S registered, P preliminary, C corrected, R partial, F final, X cancelled. Rows it leaves
  unmapped are decided here: A ("some, but not all, results available") → partial (the IG's
  working note: "in FHIR partial could be preliminary"); empty or any other code → unknown
  (the IG calls an empty OBR-25 a v2 error; FHIR-Converter also writes unknown);
- OBR-32 principal result interpreter → ``resultsInterpreter``, OBR-34 technician →
  ``performer``: the hub keeps no Practitioner resources, so each is a logical reference (the
  person's id under its assigning authority, and the name as ``display``);
- the OBX rows of the group → ``result`` and the patient → ``subject``, filled in by normalize as
  the Observations are built (``hub.contracts.ReportDraft``).

Which OBR groups get a report: every group with an OBR-4 code, except IHE PCD-01 device data —
a message declaring the PCD-01 profile in MSH-21, or an OBR-4 that names a device
specialization (MDC) or SNOMED CT 182777000 "monitoring of patient". Such an OBR is the
container PCD-01 requires around unsolicited device observations, not an ordered test; the FHIR
guides for this content (HL7 PHD IG, whose server CapabilityStatement takes Bundle, Patient,
Device and Observation; HL7 PoCD IG) model it as Observations referencing the Device tree, and
a monitor reporting every minute would otherwise add a report a minute that says nothing the
Observations do not. README § HL7v2 feeds states the rule.

Id: the order number (filler, else placer) under its issuer, with OBR-4, so a corrected report
sent again replaces the first; without an order number, the sender, the patient identifier,
OBR-4 and OBR-7.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hub.contracts import Extraction, Identifier, ReportDraft
from hub.errors import DataError
from hub.fhir.ids import instant_key, stable_id, urn_identifier
from hub.hl7v2 import Message, Repetition, Segment
from hub.mappings.hl7v2.codes import HUB_HL7, IDENTIFIER_TYPE, MDC, SNOMED
from hub.mappings.hl7v2.containment import MISSING, Context, concept_json, memo
from hub.mappings.hl7v2.identifiers import facility_system
from hub.mappings.hl7v2.times import Hl7Time, parse_dtm
from hub.mappings.hl7v2.values import concept

# HL7 table 0123 → DiagnosticReport.status (see module docstring).
REPORT_STATUS = {"O": "registered", "I": "registered", "S": "registered", "A": "partial",
                 "P": "preliminary", "C": "corrected", "R": "partial", "F": "final",
                 "X": "cancelled"}
SERVICE_SECTION = "http://terminology.hl7.org/CodeSystem/v2-0074"
PCD01_PROFILE_OID = "1.3.6.1.4.1.19376.1.6.1.1.1"
MONITORING_OF_PATIENT = "182777000"


def report_drafts(msg: Message, ctx: Context, out: Extraction) -> dict[int, ReportDraft]:
    """The report of each OBR group (numbered as ``containment.read_rows`` numbers them)."""
    if _declares_pcd01(msg, ctx):
        return {}
    drafts: dict[int, ReportDraft] = {}
    by_id: dict[str, ReportDraft] = {}
    group = 0
    orc: Segment | None = None
    for seg in msg.segments:
        if seg.name == "ORC":
            orc = seg
        elif seg.name == "OBR":
            group += 1
            resource = _report(seg, orc, ctx, out, group)
            orc = None
            if resource is None:
                continue
            # Two OBR of one order and service: one report holding both groups' results.
            draft = by_id.get(resource["id"])
            if draft is None:
                draft = by_id[resource["id"]] = ReportDraft(resource, out.resources)
            drafts[group] = draft
    return drafts


def _declares_pcd01(msg: Message, ctx: Context) -> bool:
    """MSH-21 names the IHE PCD-01 profile: memoised on its text (a sender repeats it in every
    message; the repetitions and components were ~2 % of bench.hl7_cost prepare)."""
    raw = msg.msh.raw(21)
    if ctx.encoding.escape in raw:
        return _reads_pcd01(msg)
    key = ("pcd01", raw, ctx.encoding)
    found = ctx.maps.memo.get(key, MISSING)
    return (memo(ctx.maps, key, lambda: _reads_pcd01(msg))  # type: ignore[no-any-return]
            if found is MISSING else found)


def _reads_pcd01(msg: Message) -> bool:
    for rep in msg.msh.repetitions(21):
        if rep.component(3).strip() == PCD01_PROFILE_OID or "PCD ORU-R01" in rep.component(1):
            return True
    return False


def _report(obr: Segment, orc: Segment | None, ctx: Context, out: Extraction, group: int
            ) -> dict[str, Any] | None:
    reps = obr.repetitions(4)
    code = concept(reps[0], ctx.local) if reps else None
    if code is None or not code.codings:
        return None
    if any(c.system == MDC or (c.system == SNOMED and c.code == MONITORING_OF_PATIENT)
           for c in code.codings):
        return None  # IHE PCD-01 device observations (see module docstring)
    where = f"{ctx.prefix}OBR[{group}]"
    start = _time(obr, 7, ctx, out, where)
    placer = _order_number(obr, orc, 2, ctx)
    filler = _order_number(obr, orc, 3, ctx)
    first = code.codings[0]
    order = filler or placer
    if order is not None:
        rid = stable_id("DiagnosticReport", order.token(), f"{first.system}|{first.code}")
    else:
        rid = stable_id("DiagnosticReport", ctx.sender_ident.token(),
                        ctx.patient.token() if ctx.patient else "",
                        f"{first.system}|{first.code}",
                        instant_key(start.when) if start else "")
    identifiers: list[dict[str, Any]] = [urn_identifier(rid)]
    for kind, ident in (("PLAC", placer), ("FILL", filler)):
        if ident is not None:
            identifiers.append({"type": {"coding": [{"system": IDENTIFIER_TYPE, "code": kind}]},
                                "system": ident.system, "value": ident.value})
    status = REPORT_STATUS.get(obr.field(25).strip().upper(), "unknown")
    report: dict[str, Any] = {"resourceType": "DiagnosticReport", "id": rid,
                              "identifier": identifiers, "status": status}
    section = obr.field(24).strip()
    if section:
        report["category"] = [{"coding": [{"system": SERVICE_SECTION, "code": section}]}]
    report["code"] = concept_json(code)
    end = _time(obr, 8, ctx, out, where)
    if start is not None and end is not None:
        report["effectivePeriod"] = {"start": start.fhir(), "end": end.fhir()}
    elif start is not None:
        report["effectiveDateTime"] = start.fhir()
    issued = _time(obr, 22, ctx, out, where)
    if issued is not None and issued.precision in ("minute", "second"):
        report["issued"] = issued.when.isoformat()
    interpreter = _people(obr, 32, ctx)
    if interpreter:
        report["resultsInterpreter"] = interpreter
    performers = _people(obr, 34, ctx)
    if performers:
        report["performer"] = performers
    return report


def _time(seg: Segment, n: int, ctx: Context, out: Extraction, where: str) -> Hl7Time | None:
    try:
        return parse_dtm(seg.component(n, 1), ctx.zone)
    except ValueError:
        if n != 7:  # OBR-7 is already reported by read_rows
            out.errors.append(DataError(f"OBR-{n} is not a valid date/time",
                                        location=f"{where}-{n}"))
        return None


def _order_number(obr: Segment, orc: Segment | None, n: int, ctx: Context
                  ) -> Identifier | None:
    """OBR-2/OBR-3 (EI), else ORC-2/ORC-3, as an identifier scoped by its issuer."""
    for seg in (obr, orc):
        reps = seg.repetitions(n) if seg is not None else []
        value = reps[0].component(1).strip() if reps else ""
        if value and value != '""':
            return Identifier(_issuer(reps[0], ctx), value)
    return None


def _issuer(rep: Repetition, ctx: Context) -> str:
    namespace, universal = rep.component(2).strip(), rep.component(3).strip()
    kind = rep.component(4).strip().upper()
    if universal and kind == "ISO":
        return f"urn:oid:{universal}"
    if universal and kind in ("URI", "URL"):
        return universal
    owner = namespace or universal
    if owner:
        return f"{HUB_HL7}:order:{quote(owner, safe='')}"
    return facility_system(*_sender(ctx))


def _sender(ctx: Context) -> tuple[str, str]:
    """(MSH-4, MSH-3) of the message, from the sender identity ``app^facility``."""
    app, _, facility = ctx.sender_ident.value.partition("^")
    return facility, app


def _people(seg: Segment, n: int, ctx: Context) -> list[dict[str, Any]]:
    """NDL (v2.5+) / CM (earlier) name-and-id fields: CNN in component 1's subcomponents:
    id & family & given & middle & suffix & prefix & degree & source table & assigning
    authority namespace & universal id & universal id type. An id without an assigning
    authority means something at the sending facility only, and is scoped to it."""
    found: list[dict[str, Any]] = []
    for rep in seg.repetitions(n):
        part = [rep.subcomponent(1, s).strip() for s in range(1, 12)]
        ident, family, given = part[0], part[1], part[2]
        if not (ident or family or given):
            continue
        ref: dict[str, Any] = {"type": "Practitioner"}
        if ident:
            authority = part[9] if part[9] and part[10].upper() == "ISO" else part[8]
            facility, app = _sender(ctx)
            system = (f"urn:oid:{authority}" if authority and authority == part[9]
                      else f"{HUB_HL7}:aa:{quote(authority, safe='')}" if authority
                      else f"{HUB_HL7}:practitioner:{quote(facility or app, safe='')}")
            ref["identifier"] = {"system": system, "value": ident}
        name = " ".join(p for p in (part[5], given, part[3], family, part[4]) if p)
        if name:
            ref["display"] = name
        found.append(ref)
    return found
