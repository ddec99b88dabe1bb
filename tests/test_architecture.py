"""The one-way layering is a test: import-linter's contracts from pyproject.toml must hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_connector_is_in_the_independence_contract() -> None:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    listed = next(set(c["modules"]) for c in config["contracts"]
                  if c["type"] == "independence")
    packages = {f"connectors.{p.name}" for p in (REPO / "connectors").iterdir()
                if (p / "__init__.py").exists()}
    assert packages - listed == set(), "add these connectors to the independence contract"
