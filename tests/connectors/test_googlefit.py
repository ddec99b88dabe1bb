from connectors._testing import connector_test_class
from connectors.googlefit import GoogleFitConnector

TestGoogleFit = connector_test_class(
    GoogleFitConnector, fixtures="fixtures/devices/googlefit",
    envelope={"account": "google-user-1", "patient": {"id": "conformance-patient"}},
    refused={"googlefit-empty.json": "holds no readings",
             **{f"googlefit-merge-{k}.json": "data type is not mapped"
                for k in ("activity-segments", "activity-segments-only-sleep",
                          "activity-segments-only-stationary-activity", "calories-expended",
                          "location-samples", "speed")}})
