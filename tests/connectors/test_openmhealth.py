from connectors._testing import connector_test_class
from connectors.openmhealth import OpenMHealthConnector

SUMMARY = "descriptive statistic"
TestOpenMHealth = connector_test_class(
    OpenMHealthConnector, fixtures="fixtures/devices/openmhealth",
    envelope={"account": "omh-user-1", "patient": {"id": "conformance-patient"}},
    refused={
        "blood-glucose_4.0_INVALID_missing-time-frame.json": "time is not a valid",
        "blood-pressure_3.0_INVALID_invalid-unit.json": "unit not accepted",
        "heart-rate_2.0_INVALID_incorrect-unit.json": "unit not accepted",
        "oxygen-saturation_2.0_INVALID_invalid-unit.json": "unit not accepted",
        "data-point_1.0_valid_valid-data-point.json": "schema is not mapped",
        **{f"granola-healthkit_hk-quantity-sample_1.0_valid_{k}.json":
           "HealthKit quantity type is not mapped" for k in ("with-count", "with-metadata",
                                                              "with-unit-value")},
        **{f"{k}.json": SUMMARY for k in (
            "blood-glucose_4.0_valid_with-descriptive-statistic",
            "blood-glucose_4.0_valid_with-everything",
            "blood-pressure_4.0_valid_with-descriptive-statistic",
            "body-temperature_4.0_valid_valid-temperature-with-statistic",
            "body-weight_3.0_valid_with-descriptive-statistic",
            "heart-rate_2.0_valid_with-descriptive-statistic",
            "oxygen-saturation_2.0_valid_saturation-with-statistics",
            "respiratory-rate_2.0_valid_with-statistic",
            "step-count_3.0_valid_with-average", "step-count_3.0_valid_with-maximum",
            "step-count_3.0_valid_with-session")}})
