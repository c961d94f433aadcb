"""Freezing the long-lived heap of ``muster run`` (platform/collector.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from muster.platform import collector

pytestmark = pytest.mark.unit


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """The test process's collector as it was: nothing frozen before or after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def cycle() -> weakref.ref[Node]:
    """A reference cycle only the collector can free, and a way to see whether it did."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


def test_what_is_frozen_is_out_of_the_collectors_sight_until_refrozen() -> None:
    alive = cycle()
    gc.freeze()  # a cycle nothing references, frozen before the collector came by
    assert alive() is not None
    gc.collect()
    assert alive() is not None, "a frozen cycle was collected: freezing did nothing"
    assert collector.refreeze() >= 2
    assert alive() is None, "a cycle that died while frozen was kept after a refreeze"
    assert gc.get_freeze_count() > 0


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 2 s")


async def test_freezing_starts_once_the_pods_are_listed_repeats_and_thaws() -> None:
    listed = asyncio.Event()
    now = [0.0]
    task = asyncio.create_task(
        collector.keep_frozen(listed, every=0.01, thaw_every=100.0, clock=lambda: now[0])
    )
    try:
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() == 0, "frozen before the cluster was listed"
        listed.set()
        await eventually(lambda: gc.get_freeze_count() > 0)
        # What lives on is frozen a while later, with no collection in between.
        frozen = gc.get_freeze_count()
        kept = [Node() for _ in range(1000)]
        await eventually(lambda: gc.get_freeze_count() >= frozen + len(kept))
        died_while_frozen = cycle()
        gc.freeze()
        await asyncio.sleep(0.05)
        gc.collect()
        assert died_while_frozen() is not None  # no thaw yet: it is out of sight
        now[0] = 100.0  # an hour on (as the task counts)
        await eventually(lambda: died_while_frozen() is None)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
