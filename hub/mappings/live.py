"""Hot reload: the running hub swaps in edited mappings; a broken edit is refused."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, tzinfo
from pathlib import Path

from hub.errors import MappingError
from hub.mappings.catalogue import MappingSet, fingerprint, load_mapping_set

log = logging.getLogger("hub.mappings")


class LiveMappings:
    """Holds the current MappingSet; ``refresh()`` reloads when files changed on disk."""

    def __init__(self, root: Path, default_tz: tzinfo = UTC) -> None:
        self.root = root
        self.default_tz = default_tz
        self._lock = threading.Lock()
        self._current = load_mapping_set(root, default_tz)  # a broken set at start is fatal
        self.last_error: MappingError | None = None

    def __call__(self) -> MappingSet:
        return self._current

    def refresh(self) -> bool:
        """Reload if the files changed. True if a new set is live; a broken edit is logged and
        refused, and the previous set keeps running."""
        if fingerprint(self.root) == self._current.fingerprint:
            return False
        with self._lock:
            try:
                candidate = load_mapping_set(self.root, self.default_tz)
            except MappingError as exc:
                if self.last_error is None or self.last_error.message != exc.message:
                    log.error("mapping edit refused; previous mappings stay live:\n%s", exc.message)
                self.last_error = exc
                return False
            self._current = candidate
            self.last_error = None
            log.info("mappings reloaded (%d device mappings, %d types)",
                     len(candidate.devices), len(candidate.types))
            return True
