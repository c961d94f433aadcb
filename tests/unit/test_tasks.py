"""Stopping background tasks (platform/tasks.py)."""

from __future__ import annotations

import asyncio

import pytest

from muster.platform import tasks

pytestmark = pytest.mark.unit


async def test_every_task_is_cancelled_before_any_is_waited_for() -> None:
    cancelled_at: list[str] = []
    first_may_end = asyncio.Event()

    async def slow_to_stop(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled_at.append(name)
            if name == "first":
                await first_may_end.wait()  # its clean-up takes a while
            raise

    first = asyncio.create_task(slow_to_stop("first"))
    second = asyncio.create_task(slow_to_stop("second"))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(tasks.cancel_and_wait([first, None, second]))
    await asyncio.sleep(0.01)
    assert cancelled_at == ["first", "second"]  # the second was not left running meanwhile
    assert not stopping.done()  # the first is still cleaning up
    first_may_end.set()
    await asyncio.wait_for(stopping, 1)
    assert first.cancelled() and second.cancelled()


async def test_a_task_that_failed_is_reported_and_the_others_still_stop() -> None:
    async def failed() -> None:
        raise RuntimeError("the worker broke")

    broken = asyncio.create_task(failed())
    running = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="the worker broke"):
        await tasks.cancel_and_wait([broken, running])
    await asyncio.sleep(0)
    assert running.cancelled()


async def test_nothing_started_is_nothing_to_stop() -> None:
    await tasks.cancel_and_wait([None])
    await tasks.cancel_and_wait([])
