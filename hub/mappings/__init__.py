"""Mapping files: declarations (schema), loading with positions, extraction, hot reload."""
