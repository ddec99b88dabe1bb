"""HL7v2 as a mapping: MSH-9 and OBX-3 keyed tables (``mappings/hl7v2/``) and the engine that
runs them over tokenized messages. ``MappingSet.extract("hl7v2", message)`` lands here."""

from __future__ import annotations

from hub.mappings.hl7v2.engine import SUPPORTED, extract
from hub.mappings.hl7v2.tables import Hl7v2Maps, load_hl7v2_maps

__all__ = ["SUPPORTED", "Hl7v2Maps", "extract", "load_hl7v2_maps"]
