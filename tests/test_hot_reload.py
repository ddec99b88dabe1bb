"""hub.mappings.live.LiveMappings: an edit goes live; a broken edit is refused and the previous
set keeps running."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hub.mappings.live import LiveMappings
from tests.conftest import REPO

MAPPING = """\
version: 1
name: acme
measurements:
  - each: readings
    type: "'heart-rate'"
    time: item.at
    device: {system: "'urn:acme'", value: root.serial}
    unit: "'/min'"
    values: {value: "item.%s"}
"""
PAYLOAD = {"serial": "A-1", "readings": [{"at": "2026-11-20T08:00:00Z", "hr": 61, "pulse": 99}]}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "mappings" / "types", tmp_path / "types")
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "acme.yaml").write_text(MAPPING % "hr")
    return tmp_path


def edit(path: Path, text: str) -> None:
    """Write and move the mtime forward (two edits within one clock tick must still count)."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def value_of(live: LiveMappings) -> object:
    return live().extract("acme", PAYLOAD).measurements[0].values["value"]


def test_an_edit_is_picked_up(root: Path) -> None:
    live = LiveMappings(root)
    assert value_of(live) == 61
    assert live.refresh() is False  # nothing changed: no reload
    edit(root / "devices" / "acme.yaml", MAPPING % "pulse")
    assert live.refresh() is True
    assert value_of(live) == 99
    assert live.last_error is None


def test_a_new_file_is_picked_up(root: Path) -> None:
    live = LiveMappings(root)
    (root / "devices" / "other.yaml").write_text((MAPPING % "hr").replace("name: acme",
                                                                         "name: other"))
    assert live.refresh() is True
    assert "other" in live().devices


def test_a_broken_edit_is_refused_and_the_previous_set_keeps_running(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveMappings(root)
    good = live()
    edit(root / "devices" / "acme.yaml", (MAPPING % "hr[").replace("version: 1", "version: 9"))
    assert live.refresh() is False
    assert live() is good  # the very same set still serves
    assert value_of(live) == 61
    assert live.last_error is not None
    shown = [str(p) for p in live.last_error.problems]
    assert any("acme.yaml:1:1: version:" in s for s in shown), shown
    assert any("acme.yaml:9:14: measurements[0].values.value:" in s for s in shown), shown
    assert "mapping edit refused" in caplog.text
    # fixing the file makes the next refresh go live again
    edit(root / "devices" / "acme.yaml", MAPPING % "pulse")
    assert live.refresh() is True
    assert value_of(live) == 99 and live.last_error is None


def test_a_broken_catalogue_is_refused_too(root: Path) -> None:
    live = LiveMappings(root)
    edit(root / "types" / "vital-signs.yaml", "version: 1\ntypes: [oops\n")
    assert live.refresh() is False
    assert value_of(live) == 61


def test_a_unit_the_ucum_library_cannot_convert_is_refused_at_reload(root: Path) -> None:
    from hub.normalize import units

    live = LiveMappings(root, check=lambda found: units.warm(found.types.values()))
    catalogue = root / "types" / "vital-signs.yaml"
    text = catalogue.read_text()
    assert 'convert_from: [{code: "[degF]"' in text
    edit(catalogue, text.replace('convert_from: [{code: "[degF]"',
                                 'convert_from: [{code: "[no_such_unit]"'))
    assert live.refresh() is False
    assert live.last_error is not None and "[no_such_unit]" in live.last_error.message
    assert value_of(live) == 61  # the previous set keeps running
