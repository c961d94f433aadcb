"""Refreshing a cache ahead of its age, off the admission path.

A cache the admission path reads (namespace labels, the GPU index, the ImagePolicy list, the
Model and Dataset catalogs) is trusted for a maximum age and re-read from the API once it is
older. Read only when it falls due, that read sits in every admission in flight at that moment
(docs/performance.md, "The tail"). With :class:`RefreshAhead` a reader that finds the data past
a fraction of its maximum age, but still within it, uses it at once and starts one re-read in
the background. The maximum age is unchanged: only data past it makes a reader wait (on the
cache's own shared read), and a background re-read that fails leaves the old data to expire
when it would have anyway.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["AHEAD_FRACTION", "RefreshAhead", "close_all"]

logger = logging.getLogger("muster.refreshahead")

# Past half its maximum age, data is re-read in the background: a burst that reads it keeps
# it fresh, and a quiet cache costs no more reads than before.
AHEAD_FRACTION = 0.5


class RefreshAhead:
    """At most one background refresh in flight per key of one cache (``what`` names it in
    the log). Tasks are kept here until they end (the event loop keeps only weak references)
    and :meth:`close` cancels those still running."""

    def __init__(
        self,
        what: str,
        *,
        fraction: float = AHEAD_FRACTION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
        self.what = what
        self.fraction = fraction
        self.clock = clock
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        _ALL.add(self)

    def due(self, loaded_at: float, max_age: float) -> bool:
        """Whether data loaded at ``loaded_at`` should be re-read in the background now: past
        the refresh point, still within ``max_age`` (older, the reader waits instead)."""
        if math.isinf(max_age):  # data kept for ever (tests): nothing to be ahead of
            return False
        age = self.clock() - loaded_at
        return self.fraction * max_age <= age <= max_age

    def start(self, refresh: Callable[[], Awaitable[object]], key: Hashable = None) -> bool:
        """Start ``refresh()`` in the background unless one for ``key`` is running; whether it
        started. Its failure is logged and changes nothing."""
        if key in self._tasks:
            return False
        logger.debug("refreshing %s ahead of its age", self._label(key))
        task = asyncio.get_running_loop().create_task(self._run(refresh, key))
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return True

    def in_flight(self, key: Hashable = None) -> bool:
        return key in self._tasks

    async def close(self) -> None:
        """Cancel the refreshes still running and wait for them to end."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, refresh: Callable[[], Awaitable[object]], key: Hashable) -> None:
        try:
            await refresh()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the old data stays, and still expires at its max age
            logger.warning("cannot refresh %s ahead of its age: %s", self._label(key), error)

    def _label(self, key: Hashable) -> str:
        return self.what if key is None else f"{self.what} {key}"

    def _forget(self, key: Hashable, done: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is done:
            del self._tasks[key]


_ALL: weakref.WeakSet[RefreshAhead] = weakref.WeakSet()


async def close_all() -> None:
    """Cancel every background refresh running on this event loop (on shutdown, before the
    API client they read through is closed). Another process's caches lose nothing: a cancelled
    refresh leaves the data as it was, read again when it falls due."""
    loop = asyncio.get_running_loop()
    tasks = [
        task for cache in list(_ALL) for task in cache._tasks.values() if task.get_loop() is loop
    ]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
