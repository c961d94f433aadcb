"""Keeping the garbage collector's full passes short in ``muster run``.

With 10,000 pods watched, a full collection walks every cached object with the event loop
stopped: 100 to 200 ms, every few seconds while pods change, and an admission that arrives
meanwhile waits (docs/performance.md, "The idle stall"). Most of what is alive lives long (the
cluster's pods, nodes, policies). Every ``every`` seconds ``gc.freeze()`` moves what is alive
out of the collector's sight (it moves lists, no pass), so full passes walk only what came
since. Frozen objects are still freed by reference counting; only a reference cycle that was
frozen is never collected while frozen, so every ``thaw_every`` seconds the frozen set is
thawed, collected once (one full pass, as every pass was before) and frozen again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

__all__ = ["FREEZE_SECONDS", "THAW_SECONDS", "keep_frozen", "refreeze"]

logger = logging.getLogger("muster.collector")

# Freezing costs nothing: what is younger than this is all a full pass walks.
FREEZE_SECONDS = 60.0
# One full pass an hour over the whole heap: a frozen cycle that died is kept at most that long.
THAW_SECONDS = 3600.0


def refreeze() -> int:
    """Thaw, collect everything once and freeze what is left; how many objects were freed."""
    gc.unfreeze()
    started = time.perf_counter()
    collected = gc.collect()
    gc.freeze()
    logger.debug(
        "froze %d objects after a full collection of %.0f ms (%d freed)",
        gc.get_freeze_count(),
        1000 * (time.perf_counter() - started),
        collected,
    )
    return collected


async def keep_frozen(
    listed: asyncio.Event | None,
    every: float = FREEZE_SECONDS,
    thaw_every: float = THAW_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Once ``listed`` is set (the cluster's pods are in memory; None: at once), collect and
    freeze; then freeze what is alive every ``every`` seconds, and thaw, collect and freeze
    again every ``thaw_every`` seconds, until cancelled."""
    if listed is not None:
        await listed.wait()
    refreeze()
    thawed_at = clock()
    while True:
        await asyncio.sleep(every)
        if clock() - thawed_at >= thaw_every:
            refreeze()
            thawed_at = clock()
        else:
            gc.freeze()
