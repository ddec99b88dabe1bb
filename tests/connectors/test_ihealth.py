from connectors._testing import connector_test_class
from connectors.ihealth import IHealthConnector

TestIHealth = connector_test_class(
    IHealthConnector, fixtures="fixtures/devices/ihealth",
    envelope={"account": "ihealth-user-1", "patient": {"id": "conformance-patient"}},
    refused={**{f"ihealth-{k}-empty.json": "holds no readings"
                for k in ("bp", "glucose", "spo2", "weight")},
             **{f"ihealth-{k}.json": "activity answer"
                for k in ("activity", "activity-empty", "activity-no-steps")},
             "ihealth-sleep.json": "sleep answer", "ihealth-sleep-empty.json": "sleep answer",
             "ihealth-sport.json": "sport (workout) answer",
             "ihealth-sport-empty.json": "sport (workout) answer",
             "ihealth-spo2-no-oxygen-saturation.json": "0 for the oxygen saturation",
             "ihealth-weight-no-weight-value.json": "0 for the weight"})
