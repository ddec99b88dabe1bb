import orjson
import pytest

from connectors._testing import connector_test_class
from connectors.pillbottle import SCHEMA_FILE, PillBottleConnector, event_schema
from hub.errors import DataError

TestPillBottle = connector_test_class(
    PillBottleConnector, fixtures="fixtures/devices/pillbottle",
    refused={"invalid-event-type.json": "not a pill bottle message"})


def test_committed_event_schema_is_current() -> None:
    committed = orjson.loads(SCHEMA_FILE.read_bytes())
    assert committed == event_schema(), (
        "regenerate: python -c 'from connectors.pillbottle import write_schema; write_schema()'")


def test_invalid_message_lists_every_problem_without_values() -> None:
    body = {"bottle": {"id": ""}, "events": [{"type": "dose-skipped", "time": "yesterday",
                                              "medication": {"code": "SECRET-RX"}}]}
    with pytest.raises(DataError) as caught:
        PillBottleConnector().decode(orjson.dumps(body), "application/json")
    message = caught.value.message
    for place in ("bottle.id", "events.0.type", "events.0.time"):
        assert place in message
    assert "dose-skipped" not in message and "yesterday" not in message
