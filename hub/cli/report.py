"""PASS/FAIL reporting shared by the golden-test commands (hub mappings test, hub rules test)."""

from __future__ import annotations

from collections.abc import Iterable

import typer


class CaseTally:
    """Prints one line per case (and its problems under a failure), then a summary line."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def record(self, where: str, name: str, passed: bool, problems: Iterable[str]) -> None:
        if passed:
            self.passed += 1
            typer.echo(f"PASS {where}: {name}")
            return
        self.failed += 1
        typer.echo(f"FAIL {where}: {name}")
        for problem in problems:
            typer.echo(f"    {problem}")

    def finish(self) -> None:
        """The summary line; exit 1 when anything failed or nothing ran."""
        typer.echo(f"{self.passed} passed, {self.failed} failed")
        if self.failed or not self.passed:
            raise typer.Exit(1)
