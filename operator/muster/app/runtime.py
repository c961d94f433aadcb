"""``muster run``: the kopf operator and the admission webhook server in one event loop.

Each area (images, GPU stack, models, observability) plugs in through the tuples below:
a gate factory adds admission gates, a controller registrar adds kopf handlers, an observer
factory adds decision observers. All of them share one :class:`Services` per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from typing import Any

import kopf

import muster
from muster.admission import audit as exemptions_
from muster.admission import observer as observability_
from muster.admission import pipeline as admissions
from muster.admission import server as webhooks
from muster.admission import verdicts as verdicts_
from muster.app import areas
from muster.app.settings import OperatorSettings
from muster.drift import controller as drift_
from muster.guards import namespacemodes
from muster.kernel import observations, scopes
from muster.platform import collector, kubeapi, registries, statechanges, tasks
from muster.platform import events as events_
from muster.platform import metrics as metrics_
from muster.platform import podevents as podevents_
from muster.platform import services as services_

__all__ = [
    "OperatorSettings",
    "Services",
    "build_namespace_modes",
    "build_pipeline",
    "build_registry",
    "keep_collections_short",
    "preload_verifiers",
    "run",
]

logger = logging.getLogger("muster.operator")


Services = services_.Services


def create_services(settings: OperatorSettings) -> Services[OperatorSettings]:
    """The clients, metrics and Event queue one process shares."""
    credentials = kubeapi.Credentials.resolve(settings.kubeconfig)
    services = Services(
        settings=settings,
        kube=kubeapi.KubeApi(credentials),
        registries=registries.RegistryClient(settings.registry),
        metrics=_metrics(settings),
    )
    services.registries.observer = services.metrics.registry_request
    services.events = events_.EventRecorder(services.kube, outcome=services.metrics.event_outcome)
    return services


def _metrics(settings: OperatorSettings) -> metrics_.Metrics:
    return metrics_.Metrics(
        namespaces=observations.BoundedLabel(
            limit=settings.metrics_max_namespaces, allowed=settings.metrics_namespaces
        ),
        certfile=settings.webhook.tls.certfile if settings.webhook.tls else None,
        labels=areas.metric_labels(),
    )


def _observers(services: Services[OperatorSettings]) -> Sequence[admissions.Observer]:
    # Every decision becomes metrics and Events, whichever area made it.
    return [observability_.DecisionObserver(services.metrics, services.events)]


def build_pipeline(services: Services[OperatorSettings]) -> admissions.Pipeline:
    """The gates every admission request goes through, built once per process."""
    settings = services.settings
    pipeline = admissions.Pipeline(
        active_gates=areas.gates(services),
        own_namespace=settings.own_namespace,
        enforcement=settings.enforcement,
        deadline=settings.admission_deadline,
        observers=list(_observers(services)),
        request_observers=[services.metrics],
        exemption_groups=settings.exemption_groups,
        auditor=exemptions_.Auditor(services.metrics, services.events),
        verdicts=verdicts_.Verdicts(),
    )
    # The drift controller re-judges running pods through these very gates.
    services.areas[drift_.PIPELINE_AREA] = pipeline
    return pipeline


def build_namespace_modes(services: Services[OperatorSettings]) -> namespacemodes.NamespaceModes:
    """The record of namespace mode changes, judged with the guard's settings."""
    settings = services.settings
    guard = dataclasses.replace(
        settings.namespace_guard,
        cluster_scope=settings.enforcement.scope is scopes.Scope.CLUSTER,
        uncovered_default=str(settings.uncovered_images),
    )
    return namespacemodes.NamespaceModes(
        guard, services.metrics, services.events, settings.own_namespace
    )


def build_registry(services: Services[OperatorSettings]) -> kopf.OperatorRegistry:
    """A fresh registry per operator (no import-time singletons)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster service account first, then $KUBECONFIG (read now, not at import time).
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.posting.level = logging.WARNING
        if not logging.getLogger("kopf.objects").isEnabledFor(logging.DEBUG):
            # kopf logs "Handler ... succeeded." at INFO for every event of every handler: a
            # log line per pod event of the whole cluster. Failures are warnings: still shown.
            logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        podevents_.skip_diff_bases(settings, registry)
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 30
        logger.info("muster %s operator starting", muster.__version__)

    for area in areas.AREAS:
        if area.controllers is not None:
            area.controllers(registry, services)
    # Last: the one pod watch feeding every area that subscribed above.
    pod_watch = podevents_.serve(
        registry,
        services.kube.credentials,
        active=None
        if services.settings.peering is None
        else functools.partial(drift_.active_replica, services),
    )
    keep_collections_short(registry, None if pod_watch is None else pod_watch.listed)
    # Every handler moves the epoch verdicts are reused under (admission/verdicts.py).
    statechanges.track_handlers(registry)
    return registry


def keep_collections_short(registry: kopf.OperatorRegistry, listed: asyncio.Event | None) -> None:
    """Freeze what is alive once the pods are listed, and what lives on every minute, so the
    collector's full passes do not walk the cluster's cache (platform/collector.py)."""
    freezing: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_freezing(**_: Any) -> None:
        freezing.append(asyncio.create_task(collector.keep_frozen(listed), name="muster-gc"))

    @kopf.on.cleanup(registry=registry)
    async def stop_freezing(**_: Any) -> None:
        await tasks.cancel_and_wait(freezing)


def preload_verifiers() -> None:
    """Import what a verification loads on first use, now. A command imports the bundle
    verifier (and with it the sigstore library) on the first bundle it reads, to start fast;
    in ``muster run`` that first bundle is a cold admission, which would pay about 0.1 s of
    CPU for the import while the apiserver waits."""
    from muster.signatures.rules import bundles  # noqa: F401


async def run(settings: OperatorSettings) -> None:
    """Run until SIGINT/SIGTERM; a failing webhook server stops the operator and is raised."""
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig
    preload_verifiers()
    services = create_services(settings)
    metrics_runner = None
    if settings.metrics_port is not None:
        try:
            metrics_runner = await metrics_.serve(
                services.metrics, settings.metrics_address, settings.metrics_port
            )
        except OSError as error:
            await services.close()
            raise OSError(f"metrics port {settings.metrics_port}: {error}") from None
    stop_flag = asyncio.Event()
    webhook_task = asyncio.create_task(
        webhooks.serve(
            settings.webhook,
            build_pipeline(services),
            extra_posts={namespacemodes.PATH: build_namespace_modes(services).handle},
        ),
        name="webhook-server",
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
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await services.close()
