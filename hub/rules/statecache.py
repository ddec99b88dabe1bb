"""Decoded rule states kept between messages, keyed by the state row's text.

Decoding a patient's rule states (``orjson.loads`` of each touched rule's JSON, and splitting
the row) was the largest CPU cost of the rules on a one-reading message after the state row's
own read and write (py-spy on ``bench/rules.py --batch 1``). A worker sees the same patients
again and again, and the row it reads is usually the one it wrote: so the states it encoded are
kept, decoded, with the row text they encode, and reused when the row read from the database is
that same text.

**Why this is exact.** An entry holds the row text, its per-rule JSON and, for some rules, the
decoded state of that rule — and each decoded state is equal (types included: the states hold
only JSON types) to ``orjson.loads`` of its JSON, because it was either just decoded from it or
just encoded into it (``RulesEngine._keep``). It is used only when the row read in this
transaction is that text, whoever wrote it: another worker, the scheduler or a rolled-back
transaction leave a different text (or the same text, meaning the same states). ``take``
removes the entry, so the evaluation that mutates the states owns them; ``put`` stores what it
ended with. A failed evaluation puts nothing back, so a half-updated state is never reused.

Bounded: the least recently used patients are dropped beyond ``size``.
"""

from __future__ import annotations

import threading
from typing import Any

State = dict[str, Any]


class StateCache:
    """patient → (row text, {rule id: state JSON}, {rule id: decoded state})."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._entries: dict[str, tuple[str, dict[str, str], dict[str, State]]] = {}
        self._lock = threading.Lock()

    def take(self, patient: str, text: str) -> tuple[dict[str, str], dict[str, State]] | None:
        """The states of ``patient`` if the cached ones encode ``text`` (the row as read now);
        the entry leaves the cache either way."""
        with self._lock:
            entry = self._entries.pop(patient, None)
        if entry is None or entry[0] != text:
            return None
        return entry[1], entry[2]

    def put(self, patient: str, text: str, states: dict[str, str],
            decoded: dict[str, State]) -> None:
        """Keep the states the row ``text`` holds; ``decoded`` must equal the decoding of the
        matching entries of ``states`` and must not be mutated after this call."""
        if self.size <= 0:
            return
        with self._lock:
            self._entries[patient] = (text, states, decoded)
            if len(self._entries) > self.size:
                del self._entries[next(iter(self._entries))]

    def entries(self) -> list[tuple[str, str, dict[str, str], dict[str, State]]]:
        """(patient, text, states, decoded) of every entry (tests check the invariant)."""
        with self._lock:
            return [(patient, *entry) for patient, entry in self._entries.items()]
