"""The per-registry bound on requests in flight: turns between requesters, and cancellation.

The round trips themselves are counted on the real registry in
tests/integration/images/test_large_pods.py; here only the order in which waiting requests are
let through, which needs no peer.
"""

from __future__ import annotations

import asyncio

import pytest

from muster.platform import registries

pytestmark = pytest.mark.unit


async def _hold(
    slots: registries.RequestSlots, who: str, order: list[str], release: asyncio.Event
) -> None:
    registries.requester.set(who)
    async with slots.slot("r.example"):
        order.append(who)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiting_requesters_are_served_in_turn() -> None:
    slots = registries.RequestSlots(1)
    order: list[str] = []
    release = asyncio.Event()
    first = asyncio.ensure_future(_hold(slots, "big", order, release))
    await _settle()
    queued = [asyncio.ensure_future(_hold(slots, "big", order, release)) for _ in range(5)]
    await _settle()
    queued.append(asyncio.ensure_future(_hold(slots, "small", order, release)))
    await _settle()
    assert slots.in_flight("r.example") == 1
    release.set()
    await asyncio.gather(first, *queued)
    # The small requester's one request goes second, not after the five queued before it.
    assert order == ["big", "big", "small", "big", "big", "big", "big"]
    assert slots.in_flight("r.example") == 0


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    slots = registries.RequestSlots(1)
    order: list[str] = []
    release = asyncio.Event()
    holder = asyncio.ensure_future(_hold(slots, "a", order, release))
    await _settle()
    gone = asyncio.ensure_future(_hold(slots, "b", order, release))
    after = asyncio.ensure_future(_hold(slots, "c", order, release))
    await _settle()
    gone.cancel()
    release.set()
    await asyncio.gather(holder, after)
    assert order == ["a", "c"]
    assert gone.cancelled()
    assert slots.in_flight("r.example") == 0


async def test_a_waiter_cancelled_as_it_was_granted_hands_the_slot_on() -> None:
    slots = registries.RequestSlots(1)
    order: list[str] = []
    release = asyncio.Event()
    release.set()
    async with slots.slot("r.example"):
        granted_then_cancelled = asyncio.ensure_future(_hold(slots, "b", order, release))
        after = asyncio.ensure_future(_hold(slots, "c", order, release))
        await _settle()
    # The slot went to "b" as it was left, and "b" is cancelled before it could run.
    granted_then_cancelled.cancel()
    await after
    assert order == ["c"]
    assert granted_then_cancelled.cancelled()
    assert slots.in_flight("r.example") == 0


async def test_the_bound_is_per_registry() -> None:
    slots = registries.RequestSlots(1)
    async with slots.slot("one.example"), slots.slot("two.example"):
        assert slots.in_flight("one.example") == slots.in_flight("two.example") == 1


def test_the_bound_must_let_a_request_through() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        registries.RequestSlots(0)
