"""``muster run``: the kopf operator and the admission webhook server in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from typing import Any

import kopf

import muster
from muster.core import gates, pinning
from muster.handlers import admissions, webhooks

__all__ = ["OperatorSettings", "build_pipeline", "build_registry", "run"]

logger = logging.getLogger("muster.operator")


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    webhook: webhooks.WebhookSettings
    own_namespace: str = "muster-system"
    admission_deadline: float = admissions.DEFAULT_DEADLINE_SECONDS
    kubeconfig: str | None = None
    # Peering makes exactly one replica run controllers; admission is served by every replica.
    peering: str | None = None
    liveness_endpoint: str | None = None


def build_pipeline(settings: OperatorSettings) -> admissions.Pipeline:
    """The gates every admission request goes through, built once per process."""
    active: list[gates.Gate] = [pinning.PinningGate()]
    return admissions.Pipeline(
        active_gates=active,
        own_namespace=settings.own_namespace,
        deadline=settings.admission_deadline,
    )


def build_registry() -> kopf.OperatorRegistry:
    """A fresh registry per operator (no import-time singletons); gates add their handlers here."""
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

    return registry


async def run(settings: OperatorSettings) -> None:
    """Run until SIGINT/SIGTERM; a failing webhook server stops the operator and is raised."""
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig
    stop_flag = asyncio.Event()
    webhook_task = asyncio.create_task(
        webhooks.serve(settings.webhook, build_pipeline(settings)), name="webhook-server"
    )
    webhook_task.add_done_callback(lambda _: stop_flag.set())
    try:
        await kopf.operator(
            registry=build_registry(),
            clusterwide=True,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            liveness_endpoint=settings.liveness_endpoint,
            stop_flag=stop_flag,
        )
    finally:
        if not webhook_task.done():
            webhook_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await webhook_task
