"""Hot reload: the running hub swaps in edited mappings; a broken edit is refused."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, tzinfo
from pathlib import Path

from hub.errors import MappingError
from hub.mappings.catalogue import MappingSet, fingerprint, load_mapping_set

log = logging.getLogger("hub.mappings")


Check = Callable[[MappingSet], list[str]]


class LiveMappings:
    """Holds the current MappingSet; ``refresh()`` reloads when files changed on disk.

    ``check`` runs on every candidate set before it goes live (the composition root passes the
    normalize stage's unit-conversion compiler, which this layer may not import); its problems
    refuse the set like a load error.
    """

    def __init__(self, root: Path, default_tz: tzinfo = UTC, check: Check | None = None) -> None:
        self.root = root
        self.default_tz = default_tz
        self.check = check
        self._lock = threading.Lock()
        self._current = self._load()  # a broken set at start is fatal
        self.last_error: MappingError | None = None

    def _load(self) -> MappingSet:
        candidate = load_mapping_set(self.root, self.default_tz)
        problems = self.check(candidate) if self.check is not None else []
        if problems:
            raise MappingError(f"{len(problems)} problem(s) in mappings under {self.root}:\n"
                               + "\n".join(problems))
        return candidate

    def __call__(self) -> MappingSet:
        return self._current

    def refresh(self) -> bool:
        """Reload if the files changed. True if a new set is live; a broken edit is logged and
        refused, and the previous set keeps running."""
        if fingerprint(self.root) == self._current.fingerprint:
            return False
        with self._lock:
            try:
                candidate = self._load()
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
