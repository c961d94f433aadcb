"""When the drift controller runs its passes: after a burst of policy changes once (debounced),
under a steady stream of changes at most ``max_delay`` late, and every ``interval`` anyway.

Real time, in hundredths of a second (no apiserver: the pass itself is replaced by a counter);
the tests wait for what must happen rather than assume how fast a busy machine is."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import kopf
import pytest

from muster.admission import server
from muster.app import areas, runtime
from muster.drift import area as drift_area
from muster.drift import controller as drift
from muster.platform import kubeapi, registries

pytestmark = pytest.mark.unit


class Counting(drift.DriftController):
    def __init__(
        self, services: runtime.Services, *, interval: float, debounce: float, max_delay: float
    ) -> None:
        super().__init__(
            services,
            rules=drift_area.rules(areas.GATES),
            interval=interval,
            debounce=debounce,
            max_delay=max_delay,
        )
        self.ran: list[float] = []

    async def run_pass(self) -> dict[str, int]:
        self.ran.append(time.monotonic())
        return {}


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Poll (the machine may be busy: only the order of things is asserted, not their speed)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def services() -> AsyncIterator[runtime.Services]:
    # An address nothing listens on: a pass that reached the API would fail loudly.
    kube = kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))
    found = runtime.Services(
        settings=runtime.OperatorSettings(webhook=server.WebhookSettings()),
        kube=kube,
        registries=registries.RegistryClient(),
    )
    yield found
    await found.close()


async def test_a_burst_of_changes_is_one_pass_after_it_settles(
    services: runtime.Services,
) -> None:
    controller = Counting(services, interval=3600, debounce=0.2, max_delay=5)
    controller.start()
    try:
        started = time.monotonic()
        for _ in range(5):
            controller.poke()
            await asyncio.sleep(0.01)
        await until(lambda: len(controller.ran) == 1)
        assert controller.ran[0] - started >= 0.2 + 0.04  # after the last poke, not the first
        await asyncio.sleep(0.1)
        assert len(controller.ran) == 1  # one pass for the whole burst
        controller.poke()  # a later change: another pass
        await until(lambda: len(controller.ran) == 2)
    finally:
        await controller.stop()


async def test_a_steady_stream_of_changes_still_gets_a_pass_by_max_delay(
    services: runtime.Services,
) -> None:
    controller = Counting(services, interval=3600, debounce=0.05, max_delay=0.15)
    controller.start()
    try:
        started = time.monotonic()
        while not controller.ran:
            assert time.monotonic() - started < 3, "no pass while changes kept coming"
            controller.poke()
            await asyncio.sleep(0.01)
    finally:
        await controller.stop()


async def test_without_changes_a_pass_runs_every_interval(services: runtime.Services) -> None:
    controller = Counting(services, interval=0.05, debounce=5, max_delay=5)
    controller.start()
    try:
        await until(lambda: len(controller.ran) >= 2)
    finally:
        await controller.stop()
    ran = len(controller.ran)
    await asyncio.sleep(0.1)
    assert len(controller.ran) == ran  # stopped means stopped


async def test_drift_interval_zero_registers_nothing_else_four_policy_watches(
    services: runtime.Services,
) -> None:
    services.settings = dataclasses.replace(services.settings, drift_interval=0)
    registry = kopf.OperatorRegistry()
    # Registered as muster run registers it: the drift area declared over the gates.
    register = drift_area.declare(areas.GATES).controllers
    assert register is not None
    register(registry, services)
    assert "drift" not in services.areas
    services.settings = dataclasses.replace(services.settings, drift_interval=300)
    register(registry, services)
    assert isinstance(services.areas["drift"], drift.DriftController)
    # kopf's registry of event handlers (not public API, but the only place they are listed).
    watched = {
        handler.id
        for handler in registry._watching.get_all_handlers()
        if handler.id.startswith("drift-")
    }
    assert watched == {
        "drift-imagepolicies",
        "drift-gpustackpolicies",
        "drift-datasets",
        "drift-datasetpolicies",
        "drift-models",
        "drift-modelpolicies",
    }
