"""``muster run``: the kopf operator and the admission webhook server in one event loop.

Each area (images, GPU stack, models, observability) plugs in through the tuples below:
a gate factory adds admission gates, a controller registrar adds kopf handlers, an observer
factory adds decision observers. All of them share one :class:`Services` per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import kopf

import muster
from muster.adapters import kubeapi, registries
from muster.core import gates, pinning
from muster.handlers import admissions, webhooks

__all__ = [
    "CONTROLLER_AREAS",
    "GATE_AREAS",
    "OBSERVER_AREAS",
    "OperatorSettings",
    "Services",
    "build_pipeline",
    "build_registry",
    "run",
]

logger = logging.getLogger("muster.operator")


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    webhook: webhooks.WebhookSettings
    own_namespace: str = "muster-system"
    admission_deadline: float = admissions.DEFAULT_DEADLINE_SECONDS
    kubeconfig: str | None = None
    registry: registries.RegistrySettings = dataclasses.field(
        default_factory=registries.RegistrySettings
    )
    # Peering makes exactly one replica run controllers; admission is served by every replica.
    peering: str | None = None
    priority: int = 0
    liveness_endpoint: str | None = None


@dataclasses.dataclass
class Services:
    """What every area shares in one process: settings and long-lived clients."""

    settings: OperatorSettings
    kube: kubeapi.KubeApi
    registries: registries.RegistryClient

    @classmethod
    def create(cls, settings: OperatorSettings) -> Services:
        credentials = kubeapi.Credentials.resolve(settings.kubeconfig)
        return cls(
            settings=settings,
            kube=kubeapi.KubeApi(credentials),
            registries=registries.RegistryClient(settings.registry),
        )

    async def close(self) -> None:
        await self.kube.close()
        await self.registries.close()


GateFactory = Callable[[Services], Sequence[gates.Gate]]
ControllerRegistrar = Callable[[kopf.OperatorRegistry, Services], None]
ObserverFactory = Callable[[Services], Sequence[admissions.Observer]]


def _pinning_gates(services: Services) -> Sequence[gates.Gate]:
    del services  # the rule needs no I/O
    return [pinning.PinningGate()]


GATE_AREAS: tuple[GateFactory, ...] = (_pinning_gates,)
CONTROLLER_AREAS: tuple[ControllerRegistrar, ...] = ()
OBSERVER_AREAS: tuple[ObserverFactory, ...] = ()


def build_pipeline(services: Services) -> admissions.Pipeline:
    """The gates every admission request goes through, built once per process."""
    settings = services.settings
    return admissions.Pipeline(
        active_gates=[gate for area in GATE_AREAS for gate in area(services)],
        own_namespace=settings.own_namespace,
        deadline=settings.admission_deadline,
        observers=[observer for area in OBSERVER_AREAS for observer in area(services)],
    )


def build_registry(services: Services) -> kopf.OperatorRegistry:
    """A fresh registry per operator (no import-time singletons)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster service account first, then $KUBECONFIG (read now, not at import time).
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 30
        logger.info("muster %s operator starting", muster.__version__)

    for area in CONTROLLER_AREAS:
        area(registry, services)
    return registry


async def run(settings: OperatorSettings) -> None:
    """Run until SIGINT/SIGTERM; a failing webhook server stops the operator and is raised."""
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig
    services = Services.create(settings)
    stop_flag = asyncio.Event()
    webhook_task = asyncio.create_task(
        webhooks.serve(settings.webhook, build_pipeline(services)), name="webhook-server"
    )
    webhook_task.add_done_callback(lambda _: stop_flag.set())
    try:
        await kopf.operator(
            registry=build_registry(services),
            clusterwide=True,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            priority=settings.priority,
            liveness_endpoint=settings.liveness_endpoint,
            stop_flag=stop_flag,
        )
    finally:
        if not webhook_task.done():
            webhook_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await webhook_task
        await services.close()
