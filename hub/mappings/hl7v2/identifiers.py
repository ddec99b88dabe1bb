"""Business identifiers from HL7 v2: patients (CX: PID-3, MRG-1) and devices (EI, HD: EUI-64).

Patient identifier system (documented in README § HL7v2 feeds):

1. the assigning authority's universal id when it is an ISO OID (CX-4.2 with CX-4.3 ``ISO``, or
   anything shaped like an OID) → ``urn:oid:<oid>``; a CX-4.3 of ``URI``/``URL`` → that URI;
2. else its namespace id (CX-4.1) → the URI configured in ``mappings/hl7v2/settings.yaml``
   (``assigning_authorities``), or ``urn:iomt-fhir-hub:hl7v2:aa:<namespace>``;
3. with no assigning authority at all the identifier only means something at the sending
   facility → ``urn:iomt-fhir-hub:hl7v2:facility:<MSH-4, else MSH-3>``.

Device identifier: an IEEE EUI-64 (OBX-18 ``id^EUI-64`` or ``ns^ns^id^EUI-64``, MSH-3/OBR-3
``app^id^EUI-64``) → system ``urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680`` with the 8 bytes
as dash-separated upper-case hex (``01-23-45-67-89-AB-CD-EF``), exactly as the HL7 PHD IG
(PhdDevice.identifier:systemIdIdentifier) and PoCD IG Device examples write it.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from hub.contracts import Identifier
from hub.hl7v2 import Repetition
from hub.mappings.hl7v2.codes import HUB_HL7

EUI64_SYSTEM = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
SENDER_SYSTEM = f"{HUB_HL7}:sender"
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9]\d*))+\Z")
_HEX16 = re.compile(r"[0-9A-Fa-f]{16}\Z")
_EUI_TYPES = frozenset({"EUI-64", "EUI64"})


def eui64(text: str) -> str | None:
    """``0123456789abcdef`` (any separators) → ``01-23-45-67-89-AB-CD-EF``; None if not 8 bytes."""
    digits = re.sub(r"[-:. ]", "", text.strip())
    if not _HEX16.match(digits):
        return None
    digits = digits.upper()
    return "-".join(digits[i:i + 2] for i in range(0, 16, 2))


def eui64_identifier(value: str) -> Identifier:
    return Identifier(EUI64_SYSTEM, value)


def equipment(rep: Repetition) -> Identifier | None:
    """OBX-18 (EI): the EUI-64 in ``id^EUI-64`` or ``id^ns^uid^EUI-64``, else ``id`` under its
    namespace (``urn:iomt-fhir-hub:hl7v2:equipment:<namespace>``)."""
    entity, namespace = rep.component(1).strip(), rep.component(2).strip()
    universal, universal_type = rep.component(3).strip(), rep.component(4).strip()
    if universal_type.upper() in _EUI_TYPES and (found := eui64(universal)):
        return eui64_identifier(found)
    if namespace.upper() in _EUI_TYPES and (found := eui64(entity)):
        return eui64_identifier(found)
    if not entity:
        return None
    owner = universal or namespace or "local"
    return Identifier(f"{HUB_HL7}:equipment:{quote(owner, safe='')}", entity)


def hd_eui64(rep: Repetition | None) -> Identifier | None:
    """An HD/EI field (MSH-3, OBR-3) that names an EUI-64 in component 2 or 3."""
    if rep is None:
        return None
    if rep.component(3).strip().upper() in _EUI_TYPES and (found := eui64(rep.component(2))):
        return eui64_identifier(found)
    if rep.component(4).strip().upper() in _EUI_TYPES and (found := eui64(rep.component(3))):
        return eui64_identifier(found)
    return None


def sender_identifier(application: str, facility: str) -> Identifier:
    """The sending system (MSH-3/MSH-4) as a device identity, when no equipment is named."""
    return Identifier(SENDER_SYSTEM, f"{application}^{facility}")


def facility_system(facility: str, application: str) -> str:
    owner = facility or application or "unknown"
    return f"{HUB_HL7}:facility:{quote(owner, safe='')}"


def patient_identifier(rep: Repetition, authorities: dict[str, str], facility_sys: str
                       ) -> tuple[Identifier, str] | None:
    """One CX repetition → (identifier, CX-5 type code); None when it has no id."""
    value = rep.component(1).strip()
    if not value or value == '""':
        return None
    namespace = rep.subcomponent(4, 1).strip()
    universal = rep.subcomponent(4, 2).strip()
    universal_type = rep.subcomponent(4, 3).strip().upper()
    if universal and (universal_type == "ISO" or _OID.match(universal)):
        system = f"urn:oid:{universal}"
    elif universal and universal_type in ("URI", "URL"):
        system = universal
    elif namespace:
        system = authorities.get(namespace) or f"{HUB_HL7}:aa:{quote(namespace, safe='')}"
    else:
        system = facility_sys
    return Identifier(system, value), rep.component(5).strip()


def choose_primary(found: list[tuple[Identifier, str]], preferred: list[str]) -> Identifier:
    """The identifier readings are filed under: the first of the preferred CX-5 types, else the
    first one sent."""
    for wanted in preferred:
        for ident, id_type in found:
            if id_type.upper() == wanted:
                return ident
    return found[0][0]
