"""FHIR R4 helpers: deterministic ids, OperationOutcome, Bundles. Built on fhir.resources.R4B."""
