"""The HTTP API (FastAPI): ingest, message lineage, FHIR read/search, health."""
