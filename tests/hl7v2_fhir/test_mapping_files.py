"""``mappings/hl7v2/`` files are validated like every mapping: all problems at once, positioned."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hub.errors import MappingError
from hub.mappings.catalogue import load_mapping_set
from tests.conftest import REPO


def copy_mappings(tmp_path: Path) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    return root


def test_rows_must_cite_known_sources_and_name_known_types(tmp_path: Path) -> None:
    root = copy_mappings(tmp_path)
    mdc = root / "hl7v2" / "mdc.yaml"
    text = mdc.read_text()
    text = text.replace("type: heart-rate, source: [POCD, MII]",
                        "type: heart-rat, source: [POCD, MII]")
    text = text.replace("ucum: mg/dL, source: [X73TERMS, PCD01]}", "ucum: mg/dL, source: []}")
    mdc.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mapping_set(root)
    problems = [str(p) for p in caught.value.problems]
    assert any("source" in p and "mdc.yaml:" in p for p in problems), problems
    sender = root / "hl7v2" / "icu-monitor-cg3.yaml"
    sender.write_text(sender.read_text().replace("HR: {type: heart-rate}",
                                                 "HR: {type: heart-beat}"))
    mdc.write_text(text.replace("source: []}", "source: [X73TERMS]}"))
    with pytest.raises(MappingError) as caught:
        load_mapping_set(root)
    problems = [str(p) for p in caught.value.problems]
    assert any("unknown measurement type 'heart-rat'" in p for p in problems), problems
    assert any("unknown measurement type 'heart-beat'" in p and "icu-monitor-cg3" in p
               for p in problems), problems


def test_a_new_sender_map_takes_effect(tmp_path: Path) -> None:
    from hub.hl7v2 import parse_message

    root = copy_mappings(tmp_path)
    (root / "hl7v2" / "acme-monitor.yaml").write_text(
        "version: 1\nname: acme-monitor\nsource: vendor interface spec v3\n"
        "match: {sending_application: ACME}\ncodes:\n  NBP-S: {type: blood-pressure-systolic}\n")
    mapping_set = load_mapping_set(root)
    msg = parse_message(b"MSH|^~\\&|ACME|W|H|H|20240105100000+0000||ORU^R01|1|P|2.5\r"
                        b"PID|||1^^^A^MR\rOBX|1|NM|NBP-S||121|mmHg|||||F\r")
    (m,) = mapping_set.extract("hl7v2", msg).measurements
    assert m.type == "blood-pressure-systolic" and m.values == {"value": 121}
