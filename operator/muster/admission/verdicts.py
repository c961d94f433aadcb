"""Verdicts answered again without judging, while nothing they were judged from has changed.

A warm admission spends most of its CPU in the gates re-deriving a verdict that cannot have
changed: same pod, same namespace, same policies, every image's signature check cached. The
pipeline keeps the gates' results (before exemptions, Events and metrics, which it still does
for every request) under a key of everything the gates can see, and reuses them only while:

- the request is the same but for its uid: the key is a digest of the body with the uid taken
  out (:func:`content_key`), with the phase, the namespace mode of the webhook path and the UTC
  day (the vulnerability gate reads the date);
- the process's state epoch (``platform/statechanges.py``) has not moved since the judgement
  began: every request to the API or a registry, every watch handler and every stored scan
  moves it, so a judgement that read anything from outside, or that ran while an index
  changed, is never kept, and a kept one is dropped by the next change of anything;
- it is younger than ``lifetime``: caches that expire (namespace labels, catalogs, signature
  checks) are re-read by the first judgement after they expire, which a reused verdict would
  skip; no verdict outlives that by more than ``lifetime``;
- no gate timed out or failed (``request_error``).

The cache is bounded (least recently used first out). Whatever a judgement counted in
metrics while it ran (cache look-ups) is counted again when it is reused.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import time
from collections.abc import Hashable, Sequence

from muster.kernel import gates
from muster.platform import statechanges

__all__ = ["DEFAULT_LIFETIME_SECONDS", "DEFAULT_MAX_ENTRIES", "Verdicts", "content_key"]

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_LIFETIME_SECONDS = 1.0


def content_key(body: bytes, uid: str) -> bytes | None:
    """A digest of ``body`` without its request uid, or None when the uid cannot be told apart
    (not written exactly once as a plain JSON string): then the verdict is judged anew.

    Two bodies with one digest differ at most where each holds its own uid: if that place is
    not the ``request.uid`` field, the fields hold the same text in both, so the uids are the
    same and so are the bodies."""
    quoted = json.dumps(uid).encode()
    if body.count(quoted) != 1:
        return None
    return hashlib.sha256(body.replace(quoted, b'""')).digest()


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    epoch: int
    expires: float  # time.monotonic()
    results: tuple[gates.GateResult, ...]
    recording: statechanges.Recording


@dataclasses.dataclass
class Verdicts:
    """The gates' results by request content, kept while the state epoch stands still."""

    max_entries: int = DEFAULT_MAX_ENTRIES
    lifetime: float = DEFAULT_LIFETIME_SECONDS
    hits: int = 0  # verdicts answered again, for tests and benchmarks
    _entries: collections.OrderedDict[Hashable, _Entry] = dataclasses.field(
        default_factory=collections.OrderedDict
    )

    def get(
        self, key: Hashable
    ) -> tuple[Sequence[gates.GateResult], statechanges.Recording] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.epoch != statechanges.epoch() or time.monotonic() >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.results, entry.recording

    def put(
        self,
        key: Hashable,
        epoch: int,
        results: Sequence[gates.GateResult],
        recording: statechanges.Recording,
    ) -> bool:
        """Keep ``results`` judged from state at ``epoch``, unless it moved meanwhile."""
        if epoch != statechanges.epoch() or not statechanges.tracked():
            return False
        self._entries[key] = _Entry(
            epoch, time.monotonic() + self.lifetime, tuple(results), recording
        )
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
