"""Normalize: measurements → FHIR R4 resources. Pure functions, no I/O."""
