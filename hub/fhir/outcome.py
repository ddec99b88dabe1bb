"""OperationOutcome: the one error shape every HTTP error of the hub answers with."""

from __future__ import annotations

from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


def operation_outcome(
    code: str,
    diagnostics: str,
    *,
    severity: Severity = "error",
    expression: list[str] | None = None,
) -> dict[str, Any]:
    """An R4 OperationOutcome with one issue. ``code`` is from the FHIR issue-type value set."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}
