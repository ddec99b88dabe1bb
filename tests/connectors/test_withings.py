from connectors._testing import connector_test_class
from connectors.withings import WithingsConnector

TestWithings = connector_test_class(
    WithingsConnector, fixtures="fixtures/devices/withings",
    envelope={"account": "12345678", "patient": {"id": "conformance-patient"}},
    refused={"withings-body-measures-only-goal.json": "user objective",
             "withings-activity-measures.json": "activity summary",
             "withings-intraday-activity.json": "intraday activity",
             "withings-sleep-measures.json": "sleep answer",
             "withings-sleep-summary.json": "sleep answer"})
