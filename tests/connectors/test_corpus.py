"""Every corpus payload of the built-in vendors converts, or is refused with a clear reason.

Runs each vendor folder of ``../shared/corpus/devices`` through the real hub (``hub convert``:
connector → mappings → identity → normalize), vendor-cloud answers wrapped in the account
envelope as the poller posts them. A file converts when it yields Observations and no error other
than "unassigned device"; the files listed in ``REFUSED`` must instead be refused with (at least)
the reason given. A file in neither state — or a new corpus file nobody looked at — fails.
Dexcom Share cassettes (vcrpy recordings) contribute every recorded response body.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from connectors._testing import UNASSIGNED, Converted, convert_files
from tests.conftest import CORPUS, REPO

DEVICES = CORPUS / "devices"
ACCOUNT = {"account": "corpus-account", "patient": {"id": "corpus-patient"}}

#: vendor folder → (connector, envelope or None)
VENDORS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "shimmer/withings": ("withings", ACCOUNT),
    "shimmer/ihealth": ("ihealth", ACCOUNT),
    "shimmer/fitbit": ("fitbit", {**ACCOUNT, "time_zone": "America/New_York"}),
    "shimmer/googlefit": ("googlefit", ACCOUNT),
    "openmhealth": ("openmhealth", ACCOUNT),
    "iomt-fhir/payloads": ("iomt", None),
    "dexcom-share": ("dexcom", ACCOUNT),
}

NOT_READINGS = "not a vital-sign reading"
SUMMARY = "descriptive statistic"
REFUSED: dict[str, str] = {
    # Withings: only the measure API (getmeas) carries readings
    "shimmer/withings/withings-body-measures-only-goal.json": "user objective",
    "shimmer/withings/withings-activity-measures.json": "activity summary",
    "shimmer/withings/withings-intraday-activity.json": "intraday activity",
    "shimmer/withings/withings-sleep-measures.json": "sleep answer",
    "shimmer/withings/withings-sleep-summary.json": "sleep answer",
    # iHealth: empty lists, 0 = not measured, and non-vital endpoints
    "shimmer/ihealth/ihealth-bp-empty.json": "holds no readings",
    "shimmer/ihealth/ihealth-glucose-empty.json": "holds no readings",
    "shimmer/ihealth/ihealth-spo2-empty.json": "holds no readings",
    "shimmer/ihealth/ihealth-weight-empty.json": "holds no readings",
    "shimmer/ihealth/ihealth-spo2-no-oxygen-saturation.json": "0 for the oxygen saturation",
    "shimmer/ihealth/ihealth-weight-no-weight-value.json": "0 for the weight",
    "shimmer/ihealth/ihealth-activity.json": "activity answer",
    "shimmer/ihealth/ihealth-activity-empty.json": "activity answer",
    "shimmer/ihealth/ihealth-activity-no-steps.json": "activity answer",
    "shimmer/ihealth/ihealth-sleep.json": NOT_READINGS,
    "shimmer/ihealth/ihealth-sleep-empty.json": NOT_READINGS,
    "shimmer/ihealth/ihealth-sport.json": NOT_READINGS,
    "shimmer/ihealth/ihealth-sport-empty.json": NOT_READINGS,
    # Fitbit: daily totals, activity logs and sleep
    "shimmer/fitbit/fitbit-activities-steps-timeseries.json": "daily step totals",
    "shimmer/fitbit/fitbit-activities-date-empty-activities-list.json": "activity log",
    "shimmer/fitbit/fitbit-activities-date-multiple-in-activities-list.json": "activity log",
    "shimmer/fitbit/fitbit-activities-date-single-in-activities-list.json": "activity log",
    "shimmer/fitbit/fitbit-sleep-date.json": NOT_READINGS,
    "shimmer/fitbit/fitbit-sleep-date-empty-sleep-list.json": NOT_READINGS,
    "shimmer/fitbit/fitbit-sleep-date-range.json": NOT_READINGS,
    "shimmer/fitbit/fitbit-sleep-date-range-empty-sleep-list.json": NOT_READINGS,
    # Google Fit: unmapped data types, an empty dataset
    "shimmer/googlefit/googlefit-empty.json": "holds no readings",
    **{f"shimmer/googlefit/googlefit-merge-{k}.json": "data type is not mapped"
       for k in ("activity-segments", "activity-segments-only-sleep",
                 "activity-segments-only-stationary-activity", "calories-expended",
                 "location-samples", "speed")},
    # Open mHealth: invalid samples (the schemas' own negative examples), summaries, other schemas
    "openmhealth/blood-glucose_4.0_INVALID_missing-time-frame.json": "time is not a valid",
    "openmhealth/blood-pressure_3.0_INVALID_invalid-unit.json": "unit not accepted",
    "openmhealth/heart-rate_2.0_INVALID_incorrect-unit.json": "unit not accepted",
    "openmhealth/oxygen-saturation_2.0_INVALID_invalid-unit.json": "unit not accepted",
    "openmhealth/data-point_1.0_valid_valid-data-point.json": "schema is not mapped",
    **{f"openmhealth/granola-healthkit_hk-quantity-sample_1.0_valid_{k}.json":
       "HealthKit quantity type is not mapped" for k in ("with-count", "with-metadata",
                                                         "with-unit-value")},
    **{f"openmhealth/{k}.json": SUMMARY for k in (
        "blood-glucose_4.0_valid_with-descriptive-statistic",
        "blood-glucose_4.0_valid_with-everything",
        "blood-pressure_4.0_valid_with-descriptive-statistic",
        "body-temperature_4.0_valid_valid-temperature-with-statistic",
        "body-weight_3.0_valid_with-descriptive-statistic",
        "heart-rate_2.0_valid_with-descriptive-statistic",
        "oxygen-saturation_2.0_valid_saturation-with-statistics",
        "respiratory-rate_2.0_valid_with-statistic",
        "step-count_3.0_valid_with-average", "step-count_3.0_valid_with-maximum",
        "step-count_3.0_valid_with-session")},
    # iomt-fhir: no measurement time
    "iomt-fhir/payloads/data_IotHubPayloadExampleMissingCreateTime.json": "no measurement time",
    # Dexcom Share cassettes: empty answers, expired sessions, login answers
    **{f"dexcom-share/cassette_glucose-readings_empty.yaml#{i}": "holds no readings"
       for i in range(3)},
    **{f"dexcom-share/cassette_session-expired-then-relogin.yaml#{i}":
       "answered with an error (SessionIdNotFound)" for i in (0, 3, 6)},
    **{f"dexcom-share/cassette_session-expired-then-relogin.yaml#{i}":
       "not a Dexcom Share glucose list" for i in (1, 4, 7)},
}


def _payloads(folder: str, scratch: Path) -> dict[str, Path]:
    """Corpus name → file to post: JSON files as they are, cassette bodies extracted."""
    found: dict[str, Path] = {}
    for path in sorted((DEVICES / folder).iterdir()):
        if path.suffix == ".json":
            found[f"{folder}/{path.name}"] = path
        elif path.suffix == ".yaml":  # a vcrpy cassette: every recorded response body
            cassette = YAML(typ="safe").load(path.read_text())
            for index, interaction in enumerate(cassette["interactions"]):
                body = scratch / f"{path.stem}-{index}.json"
                body.write_text(interaction["response"]["body"]["string"])
                found[f"{folder}/{path.name}#{index}"] = body
    return found


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Converted]:
    if not DEVICES.is_dir():
        pytest.skip(f"corpus not found at {DEVICES}")
    scratch = tmp_path_factory.mktemp("corpus")
    results: dict[str, Converted] = {}
    for folder, (source, envelope) in VENDORS.items():
        payloads = _payloads(folder, scratch)
        by_file = convert_files(source, list(payloads.values()), envelope)
        results.update({name: by_file[path.name] for name, path in payloads.items()})
    return results


def test_every_corpus_payload_converts_or_is_refused_with_its_reason(
    outcomes: dict[str, Converted],
) -> None:
    wrong = []
    for name, result in sorted(outcomes.items()):
        real_errors = [e for e in result.errors if UNASSIGNED not in e]
        if name in REFUSED:
            if not any(REFUSED[name] in e for e in real_errors):
                wrong.append(f"{name}: expected refusal '{REFUSED[name]}', got {real_errors}")
        elif real_errors:
            wrong.append(f"{name}: expected to convert, got {real_errors}")
    assert not wrong, "\n".join(wrong)
    assert not set(REFUSED) - set(outcomes), "REFUSED names files the corpus no longer has"


def test_most_of_the_corpus_converts(outcomes: dict[str, Converted]) -> None:
    converted = [n for n in outcomes if n not in REFUSED]
    assert len(converted) >= 40, converted
    bundles = {id(r.bundle): r.bundle for r in outcomes.values() if r.bundle}
    observations = sum(1 for b in bundles.values() for e in b.get("entry", [])
                       if e["resource"]["resourceType"] == "Observation")
    assert observations >= 60  # distinct readings (the Bundle keeps one per id)


def test_fixture_copies_are_identical_to_the_corpus() -> None:
    if not DEVICES.is_dir():
        pytest.skip(f"corpus not found at {DEVICES}")
    manifest = {e["sha256"] for e in json.loads((CORPUS / "MANIFEST.json").read_text())}
    sources = (REPO / "fixtures" / "devices" / "SOURCES.md").read_text()
    for path in sorted((REPO / "fixtures" / "devices").rglob("*.json")):
        rel = path.relative_to(REPO / "fixtures" / "devices").as_posix()
        assert f"`{rel}`" in sources, f"{rel} has no provenance line in SOURCES.md"
        if "synthetic" in path.name or path.parent.name == "pillbottle":
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in manifest, f"{rel} is not a byte copy of a corpus file"
