"""The verifier's single flight and bounded, expiring cache (no registry needed)."""

from __future__ import annotations

import asyncio

import pytest

from muster.images import verifier as imageverifier

pytestmark = pytest.mark.unit


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_work() -> None:
    flights = imageverifier._Flights()
    release = asyncio.Event()
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "verified"

    leader = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)
    joiner = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)
    leader.cancel()  # the admission deadline of the first request
    with pytest.raises(asyncio.CancelledError):
        await leader
    release.set()
    assert await joiner == "verified"
    assert calls == 1
    assert flights.joined == 1
    assert await flights.run("k", work) == "verified"  # finished: a new flight
    assert calls == 2


async def test_errors_reach_every_caller_and_are_not_remembered() -> None:
    flights = imageverifier._Flights()
    gate = asyncio.Event()

    async def failing() -> str:
        await gate.wait()
        raise RuntimeError("registry down")

    first = asyncio.create_task(flights.run("k", failing))
    second = asyncio.create_task(flights.run("k", failing))
    await asyncio.sleep(0)
    gate.set()
    for task in (first, second):
        with pytest.raises(RuntimeError, match="registry down"):
            await task


def test_lru_expires_and_stays_bounded() -> None:
    now = [0.0]
    cache: imageverifier._Lru[int] = imageverifier._Lru(2, lambda: now[0])
    cache.put("a", 1, ttl=10)
    cache.put("b", 2, ttl=1)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3, ttl=10)
    assert cache.get("b") is None  # evicted: least recently used
    assert len(cache) == 2
    now[0] = 11
    assert cache.get("a") is None  # expired
