from connectors._testing import connector_test_class
from connectors.dexcom import DexcomConnector

# Share answers need the account envelope; API v3 answers name their account and go unwrapped.
TestDexcomShare = connector_test_class(
    DexcomConnector, fixtures="fixtures/devices/dexcom/share",
    envelope={"account": "share-account-1", "patient": {"id": "conformance-patient"}})
TestDexcomV3 = connector_test_class(
    DexcomConnector, fixtures="fixtures/devices/dexcom/v3",
    refused={"v3-egvs-unknown-unit-synthetic.json": "unit as unknown"})
# Clarity CSV rows as `hub import dexcom --layout clarity` posts them (tests/test_file_import.py
# reads the CSV itself, with its preamble, events and a blank value).
TestDexcomClarity = connector_test_class(
    DexcomConnector, fixtures="fixtures/devices/dexcom/clarity")
