"""Identity modes: what a reading naming an unregistered device or patient does, per source.

- ``create`` (the default): the device, and the patient the payload names, are registered on
  first sight (a Device/Patient with that identifier and a deterministic id).
- ``lookup``: the registry is authoritative. The reading waits in quarantine ("unknown device",
  "unknown patient") until the identifier is registered, and, for a reading that names no patient,
  until an assignment covers its time ("unassigned device"); the registry changes that concern
  it (its identifiers registered, its device assigned) release it (``hub.store.quarantine``).

Configured by ``HUB_IDENTITY_MODE`` (every source) and ``HUB_IDENTITY_MODES`` (JSON, per source,
e.g. ``{"withings": "lookup"}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from hub.errors import ConfigurationError

Mode = Literal["create", "lookup"]
CREATE: Mode = "create"
LOOKUP: Mode = "lookup"


@dataclass(frozen=True)
class IdentityModes:
    """The mode of each source: ``sources`` overrides ``default``."""

    default: Mode = CREATE
    sources: Mapping[str, Mode] = field(default_factory=dict)

    def of(self, source: str) -> Mode:
        return self.sources.get(source, self.default)

    @property
    def any_lookup(self) -> bool:
        """Whether some source waits for registrations (so registering one releases quarantine)."""
        return self.default == LOOKUP or LOOKUP in self.sources.values()

    @classmethod
    def configured(cls, default: Mode, sources: Mapping[str, Mode],
                   known: Iterable[str]) -> IdentityModes:
        """From settings; a source that no connector provides is a configuration error (a typo
        would otherwise leave that source in the default mode unnoticed)."""
        names = set(known)
        unknown = sorted(set(sources) - names)
        if unknown:
            raise ConfigurationError(
                f"HUB_IDENTITY_MODES names unknown source(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(names)) or 'none'})")
        return cls(default, dict(sources))
