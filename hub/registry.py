"""Connector discovery by entry point (group ``hub.connectors``), as Singer SDK plugins do."""

from __future__ import annotations

from importlib.metadata import entry_points

from hub.contracts import Connector
from hub.errors import ConfigurationError, UnknownSourceError

GROUP = "hub.connectors"


class ConnectorRegistry:
    """Connector instances by source name."""

    def __init__(self, connectors: dict[str, Connector]) -> None:
        self._connectors = dict(connectors)

    @classmethod
    def discover(cls) -> ConnectorRegistry:
        """Instantiate every registered connector with its default config."""
        found: dict[str, Connector] = {}
        for ep in entry_points(group=GROUP):
            klass = ep.load()
            if not (isinstance(klass, type) and issubclass(klass, Connector)):
                raise ConfigurationError(f"entry point {ep.name} is not a hub Connector")
            if klass.name != ep.name:
                raise ConfigurationError(
                    f"entry point '{ep.name}' loads connector named '{klass.name}'")
            found[ep.name] = klass()
        return cls(found)

    def get(self, source: str) -> Connector:
        try:
            return self._connectors[source]
        except KeyError:
            known = ", ".join(sorted(self._connectors)) or "none"
            raise UnknownSourceError(f"unknown source '{source}' (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._connectors)
