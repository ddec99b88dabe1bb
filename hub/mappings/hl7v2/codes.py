"""HL7 v2 code tables the OBX/PID mapping needs, each with its published source.

- Coding-system names (OBX-3.3, OBX-6.3, CWE-3; HL7 table 0396) → FHIR system URIs, per the
  HL7 v2-to-FHIR IG's "CodeSystem names" mapping (https://build.fhir.org/ig/HL7/v2-to-fhir/,
  ConceptMap "v2 table 0396 to FHIR CodeSystem URI") and terminology.hl7.org: LN → LOINC, MDC →
  ISO/IEEE 11073-10101 (urn:iso:std:iso:11073:10101, as the PHD and PoCD IGs use), SCT → SNOMED
  CT, UCUM, I9C/I10, HL7nnnn → terminology.hl7.org v2 tables. Any other name keeps its own
  namespace under ``urn:iomt-fhir-hub:hl7v2:codesystem:``; an empty one is the sender's local code
  (``local_system``).
- OBX-11 (table 0085) → Observation.status, per the v2-to-FHIR ConceptMap "v2-0085 to
  observation status" (A amended, C corrected, D/W entered-in-error, F final, I registered, P/S
  preliminary); rows it leaves blank are decided here and documented in README § HL7v2 feeds:
  R (entered, not verified) → preliminary, U (changed to final) and V (verified) → final,
  B (appended) → amended, O (order detail) → registered, X (cannot be obtained) → cancelled with
  dataAbsentReason not-performed, N (not asked) → cancelled with not-asked; empty → unknown.
- OBX-8 (table 0078) → v3 ObservationInterpretation: HL7 keeps the two tables code-identical
  (terminology.hl7.org/CodeSystem-v2-0078 is "replaced by" v3-ObservationInterpretation), so a
  known code is carried over with the v3 system; an unknown flag is kept as text only.
"""

from __future__ import annotations

from urllib.parse import quote

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
HUB_HL7 = "urn:iomt-fhir-hub:hl7v2"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"

_SYSTEMS = {
    "LN": LOINC, "LOINC": LOINC,
    "MDC": MDC,
    "SCT": SNOMED, "SNM": SNOMED, "SNOMED-CT": SNOMED, "SNOMEDCT": SNOMED,
    "UCUM": UCUM,
    "I9": "http://hl7.org/fhir/sid/icd-9-cm", "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I10": "http://hl7.org/fhir/sid/icd-10", "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "CPT": "http://www.ama-assn.org/go/cpt", "C4": "http://www.ama-assn.org/go/cpt",
    "NDC": "http://hl7.org/fhir/sid/ndc", "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
}


def safe_code(text: str) -> str:
    """A table code fit to quote in an error (1-4 upper-case letters/digits), else a stand-in:
    reasons never carry message content, and a code field may hold anything."""
    return text if text and len(text) <= 4 and text.isalnum() and text.isupper() else "(unlisted)"


def system_uri(name: str, local_system: str) -> str:
    """The FHIR system URI for a v2 coding-system name (see module docstring)."""
    key = name.strip()
    if not key or key.upper() in ("L", "99ZZZ", "LOCAL"):
        return local_system
    found = _SYSTEMS.get(key.upper())
    if found is not None:
        return found
    upper = key.upper()
    if upper.startswith("HL7") and upper[3:].isdigit():
        return f"http://terminology.hl7.org/CodeSystem/v2-{upper[3:].zfill(4)}"
    if upper.startswith("99") and len(key) <= 5:  # 99zzz: locally defined tables
        return local_system
    return f"{HUB_HL7}:codesystem:{quote(key, safe='')}"


def local_system(facility: str, application: str) -> str:
    """Namespace of a sender's local codes: ``urn:iomt-fhir-hub:hl7v2:local:<MSH-4 or MSH-3>``."""
    owner = facility or application or "unknown"
    return f"{HUB_HL7}:local:{quote(owner, safe='')}"


# (status, dataAbsentReason) per OBX-11; see module docstring for the sources.
RESULT_STATUS: dict[str, tuple[str, str | None]] = {
    "A": ("amended", None), "B": ("amended", None), "C": ("corrected", None),
    "D": ("entered-in-error", None), "W": ("entered-in-error", None),
    "F": ("final", None), "U": ("final", None), "V": ("final", None),
    "I": ("registered", None), "O": ("registered", None),
    "P": ("preliminary", None), "R": ("preliminary", None), "S": ("preliminary", None),
    "X": ("cancelled", "not-performed"), "N": ("cancelled", "not-asked"),
}
UNKNOWN_STATUS = ("unknown", None)

# HL7 table 0078 codes (identical in v3 ObservationInterpretation).
INTERPRETATION_CODES = frozenset({
    "L", "H", "LL", "HH", "<", ">", "N", "A", "AA", "U", "D", "B", "W", "S", "R", "I", "MS",
    "VS", "NEG", "POS", "IND", "DET", "ND", "AC", "RR", "QCF", "TOX", "EX", "HX", "LX", "HU",
    "LU", "IE", "NR", "NS", "SDD", "SYN-R", "SYN-S", "CAR", "E", "EXP", "WR",
})

# PID-8 administrative sex (table 0001) → FHIR AdministrativeGender (v2-to-FHIR ConceptMap
# "v2-0001 to administrative gender": A ambiguous → other, N not applicable → unknown).
GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown",
          "N": "unknown"}

# XPN-7 name type (table 0200) → HumanName.use (v2-to-FHIR ConceptMap "v2-0200 to name use");
# codes it leaves unmapped are left without a use.
NAME_USE = {"L": "official", "A": "usual", "D": "usual", "M": "maiden", "N": "nickname",
            "S": "anonymous", "B": "old", "BAD": "old"}
