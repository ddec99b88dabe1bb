"""ADT → patient registry facts: a Patient to upsert (A01/A04/A08/A28/A31) or a merge (A40).

The Patient carries every PID-3 identifier (system per ``identifiers.patient_identifier``, CX-5
as Identifier.type from table 0203), the names (XPN), birth date (PID-7) and sex (PID-8). Its id
is provisional (from the preferred identifier); the pipeline gives it the id any of its
identifiers is already registered under and binds all of them, so readings that name any of
these identifiers land on this Patient. OBX segments of an ADT (admission height/weight) are
not converted: an ADT feeds the registry only.

A40 (merge patient, patient identifier list): PID names the surviving patient, MRG-1 the merged
one's identifiers; each PID/MRG pair becomes a :class:`hub.contracts.PatientMerge`.
"""

from __future__ import annotations

from typing import Any

from hub.contracts import Extraction, Identifier, PatientMerge
from hub.errors import DataError
from hub.fhir.ids import registry_id
from hub.hl7v2 import Message, Segment
from hub.mappings.hl7v2.codes import GENDER, IDENTIFIER_TYPE, NAME_USE
from hub.mappings.hl7v2.identifiers import choose_primary, facility_system, patient_identifier
from hub.mappings.hl7v2.tables import Hl7v2Maps
from hub.mappings.hl7v2.times import parse_dtm

UPSERT_EVENTS = frozenset({"A01", "A04", "A08", "A28", "A31"})
MERGE_EVENTS = frozenset({"A40"})
SOURCE_TAG_SYSTEM = "urn:iomt-fhir-hub:source"


def _identifiers(seg: Segment, n: int, msg: Message, maps: Hl7v2Maps
                 ) -> list[tuple[Identifier, str]]:
    msh = msg.msh
    fac_sys = facility_system(msh.component(4, 1).strip(), msh.component(3, 1).strip())
    return [f for rep in seg.repetitions(n)
            if (f := patient_identifier(rep, maps.settings.assigning_authorities, fac_sys))]


def patient_resource(pid: Segment, msg: Message, maps: Hl7v2Maps, out: Extraction,
                     prefix: str) -> tuple[dict[str, Any], Identifier]:
    """The Patient of a PID segment and its preferred identifier; DataError without PID-3."""
    found = _identifiers(pid, 3, msg, maps)
    if not found:
        raise DataError("PID-3 patient identifier list is empty", location=f"{prefix}PID-3")
    primary = choose_primary(found, maps.settings.patient_identifier_types)
    identifiers = []
    for ident, id_type in found:
        entry: dict[str, Any] = {}
        if id_type and id_type != '""':
            entry["type"] = {"coding": [{"system": IDENTIFIER_TYPE, "code": id_type}]}
        entry.update(system=ident.system, value=ident.value)
        identifiers.append(entry)
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": registry_id("Patient", primary),
        "meta": {"tag": [{"system": SOURCE_TAG_SYSTEM, "code": "hl7v2"}]},
        "identifier": identifiers, "active": True,
    }
    names = [n for rep in pid.repetitions(5) if (n := _name(rep))]
    if names:
        patient["name"] = names
    gender = GENDER.get(pid.field(8).strip().upper())
    if gender:
        patient["gender"] = gender
    birth = pid.component(7, 1).strip()
    if birth and birth != '""':
        try:
            parsed = parse_dtm(birth, maps.default_tz)
        except ValueError:
            parsed = None
            out.errors.append(DataError("PID-7 birth date is not a valid date; Patient kept "
                                        "without it", location=f"{prefix}PID-7"))
        if parsed is not None:
            patient["birthDate"] = parsed.fhir()[:10]
    return patient, primary


def _name(rep: Any) -> dict[str, Any] | None:
    family = rep.subcomponent(1, 1).strip()
    given = [g for g in (rep.component(2).strip(), rep.component(3).strip()) if g and g != '""']
    suffix, prefix = rep.component(4).strip(), rep.component(5).strip()
    if family == '""':
        family = ""
    if not family and not given:
        return None
    name: dict[str, Any] = {}
    use = NAME_USE.get(rep.component(7).strip().upper())
    if use:
        name["use"] = use
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    if prefix and prefix != '""':
        name["prefix"] = [prefix]
    if suffix and suffix != '""':
        name["suffix"] = [suffix]
    return name


def extract_adt(msg: Message, event: str, maps: Hl7v2Maps, out: Extraction, prefix: str = ""
                ) -> None:
    """Append the ADT's Patient (and merges, for A40) to ``out``."""
    pids = msg.segments_named("PID")
    if not pids:
        raise DataError(f"ADT^{event} has no PID segment", location=f"{prefix}PID")
    if event in MERGE_EVENTS:
        _merges(msg, pids, maps, out, prefix)
        return
    patient, _ = patient_resource(pids[0], msg, maps, out, prefix)
    out.patients.append(patient)


def _merges(msg: Message, pids: list[Segment], maps: Hl7v2Maps, out: Extraction,
            prefix: str) -> None:
    mrgs = msg.segments_named("MRG")
    if not mrgs:
        raise DataError("ADT^A40 has no MRG segment", location=f"{prefix}MRG")
    for n, (pid, mrg) in enumerate(zip(pids, mrgs, strict=False), start=1):
        where = f"{prefix}MRG[{n}]"
        patient, survivor = patient_resource(pid, msg, maps, out, prefix)
        merged = [ident for ident, _ in _identifiers(mrg, 1, msg, maps)]
        if not merged:  # MRG-4 prior patient ID (deprecated since v2.3.1) as a fallback
            merged = [ident for ident, _ in _identifiers(mrg, 4, msg, maps)]
        if not merged:
            out.errors.append(DataError("MRG-1 prior patient identifier list is empty",
                                        location=f"{where}-1"))
            continue
        if survivor in merged:
            out.errors.append(DataError("MRG-1 names the surviving patient itself",
                                        location=f"{where}-1"))
            continue
        out.patients.append(patient)
        out.merges.append(PatientMerge(survivor, tuple(merged), where))
