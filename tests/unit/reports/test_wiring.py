"""``muster run`` wiring: the report keeper follows the drift controller (turning audit on when
asked), stays away without drift passes, and registers nothing when reports are off."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest

from muster.admission import server
from muster.app import runtime
from muster.drift import controller as drift
from muster.platform import kubeapi, registries
from muster.reports import keeper

pytestmark = pytest.mark.unit


@pytest.fixture
async def services() -> AsyncIterator[runtime.Services]:
    # An address nothing listens on: nothing here may reach an API.
    kube = kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))
    found = runtime.Services(
        settings=runtime.OperatorSettings(webhook=server.WebhookSettings()),
        kube=kube,
        registries=registries.RegistryClient(),
    )
    try:
        yield found
    finally:
        await found.close()


async def _start(registry: kopf.OperatorRegistry) -> None:
    # kopf's registry of startup handlers (not public API, but the only place they are listed).
    for handler in registry._activities.get_all_handlers():
        if handler.id.endswith("follow_drift"):
            fn: Any = handler.fn
            await fn()


@pytest.mark.parametrize("audit", [False, True])
async def test_the_keeper_listens_to_the_drift_controller(
    services: runtime.Services, audit: bool
) -> None:
    services.settings = dataclasses.replace(services.settings, audit_namespaces=audit)
    registry = runtime.build_registry(services)
    await _start(registry)
    controller = services.areas[drift.AREA]
    assert isinstance(controller, drift.DriftController)
    found = services.areas[keeper.AREA]
    assert isinstance(found, keeper.ReportKeeper)
    assert controller.listeners == [found.after_pass]
    assert controller.audit is audit
    assert found.max_results == services.settings.policy_report_max_results


async def test_without_drift_passes_no_reports_and_it_is_said(
    services: runtime.Services, caplog: pytest.LogCaptureFixture
) -> None:
    services.settings = dataclasses.replace(services.settings, drift_interval=0)
    registry = runtime.build_registry(services)
    with caplog.at_level(logging.WARNING, logger="muster.reports"):
        await _start(registry)
    assert drift.AREA not in services.areas
    assert any("no PolicyReports are written" in r.getMessage() for r in caplog.records)


async def test_reports_off_registers_nothing(services: runtime.Services) -> None:
    services.settings = dataclasses.replace(services.settings, policy_reports=False)
    runtime.build_registry(services)
    assert keeper.AREA not in services.areas
    controller = services.areas[drift.AREA]
    assert isinstance(controller, drift.DriftController)
    assert controller.listeners == [] and controller.audit is False
