from connectors._testing import connector_test_class
from connectors.iomt import IomtConnector

TestIomt = connector_test_class(
    IomtConnector, fixtures="fixtures/devices/iomt",
    refused={"data_IotHubPayloadExampleMissingCreateTime.json": "no measurement time"})
