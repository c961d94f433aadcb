"""What the registry client remembers about the referrers API, and how round trips are counted
(pure bookkeeping; the real registries are asked in tests/integration/images)."""

from __future__ import annotations

import pytest

from muster.platform import registries

pytestmark = pytest.mark.unit


def test_referrers_support_expires_and_stays_bounded() -> None:
    now = [0.0]
    support = registries.ReferrersSupport(ttl=60, clock=lambda: now[0])
    assert support.get("r.example") is None
    support.put("r.example", False)
    assert support.get("r.example") is False
    now[0] = 59.9
    assert support.get("r.example") is False
    now[0] = 60.0
    assert support.get("r.example") is None  # expired: asked both ways again
    support.put("r.example", True)
    assert support.get("r.example") is True
    for index in range(registries.ReferrersSupport.MAX_REGISTRIES + 5):
        support.put(f"host-{index}", True)
    assert support.get("r.example") is None  # the oldest went first
    assert support.get(f"host-{registries.ReferrersSupport.MAX_REGISTRIES + 4}") is True


def test_round_trips_count_requests_in_sequence_once_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(registries.time, "perf_counter", lambda: clock[0])
    seen: list[str] = []
    trips = registries.RoundTrips(then=lambda registry, outcome, seconds: seen.append(outcome))

    def finished(start: float, end: float) -> None:
        clock[0] = end
        trips("r.example", "success", end - start)

    # Two requests in parallel, then one after both answered, then one more after that.
    finished(0.0, 1.0)
    finished(0.1, 1.5)
    finished(1.6, 2.0)
    finished(2.1, 3.0)
    assert (trips.requests, trips.depth) == (4, 3)
    assert seen == ["success"] * 4  # the observer it wraps still hears every request
    trips.reset()
    assert (trips.requests, trips.depth, trips.spans) == (0, 0, [])
