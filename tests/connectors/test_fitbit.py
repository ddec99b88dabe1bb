from connectors._testing import connector_test_class
from connectors.fitbit import FitbitConnector

TestFitbit = connector_test_class(
    FitbitConnector, fixtures="fixtures/devices/fitbit",
    envelope={"account": "2QXYZ9", "time_zone": "America/New_York",
              "patient": {"id": "conformance-patient"}},
    refused={**{f"fitbit-activities-date-{k}.json": "activity log"
                for k in ("empty-activities-list", "multiple-in-activities-list",
                          "single-in-activities-list")},
             "fitbit-activities-steps-timeseries.json": "daily step totals",
             **{f"fitbit-sleep-{k}.json": "sleep answer"
                for k in ("date", "date-empty-sleep-list", "date-range",
                          "date-range-empty-sleep-list")}})
