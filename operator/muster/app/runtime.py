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
from pathlib import Path
from typing import Any

import kopf

import muster
from muster.admission import audit as exemptions_
from muster.admission import observer as observability_
from muster.admission import pipeline as admissions
from muster.admission import server as webhooks
from muster.boms import keeper as boms_
from muster.drift import controller as drift_
from muster.drift.rules import passes as drift_core
from muster.gpu import gate as gpupods
from muster.gpu import nodes as gpunodes
from muster.guards import namespacemodes
from muster.guards.rules import namespaces as namespaceguard
from muster.images import gate as imagegate
from muster.images.rules import pinning
from muster.images.rules import policies as imagepolicies
from muster.kernel import gates, observations, scopes, selectors
from muster.models import controllers as models
from muster.platform import events as events_
from muster.platform import kubeapi, registries
from muster.platform import metrics as metrics_
from muster.platform import podevents as podevents_
from muster.platform import services as services_
from muster.vulnerabilities import gate as vulnerabilities_

__all__ = [
    "CONTROLLER_AREAS",
    "GATE_AREAS",
    "OBSERVER_AREAS",
    "OperatorSettings",
    "Services",
    "build_namespace_modes",
    "build_pipeline",
    "build_registry",
    "run",
]

logger = logging.getLogger("muster.operator")


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    webhook: webhooks.WebhookSettings
    own_namespace: str = "muster-system"
    # Which namespaces are judged: opted-in ones or, in cluster scope, all; and those never
    # judged besides the control plane's and own_namespace. Every controller agrees on it.
    enforcement: scopes.Enforcement = scopes.NAMESPACED
    admission_deadline: float = admissions.DEFAULT_DEADLINE_SECONDS
    kubeconfig: str | None = None
    registry: registries.RegistrySettings = dataclasses.field(
        default_factory=registries.RegistrySettings
    )
    # Peering makes exactly one replica run controllers; admission is served by every replica.
    peering: str | None = None
    priority: int = 0
    liveness_endpoint: str | None = None
    # Observability: /metrics on this address and port (None: not served); namespace labels
    # limited to metrics_namespaces when given, else to the first metrics_max_namespaces seen.
    metrics_address: str = "0.0.0.0"  # noqa: S104  # Prometheus scrapes the pod IP
    metrics_port: int | None = None
    metrics_namespaces: frozenset[str] | None = None
    metrics_max_namespaces: int = 100
    # Model gate: the image of the init container that re-verifies model volumes on the node,
    # and whether pods using a revoked Model are evicted (default: Events and metrics only).
    model_verifier_image: str = models.DEFAULT_VERIFIER_IMAGE
    evict_revoked_model_pods: bool = False
    # Image gate: what happens to an image no ImagePolicy covers (a namespace's
    # muster.dev/uncovered-images label overrides it): never admitted for being pinned alone.
    uncovered_images: imagepolicies.Uncovered = imagepolicies.Uncovered.DENY
    # Break-glass exemptions: groups whose members may use the muster.dev/exemption
    # annotation (empty: exemptions are impossible).
    exemption_groups: frozenset[str] = frozenset()
    # The namespace guard's settings, to record each namespace mode change as the guard (a
    # ValidatingAdmissionPolicy installed beside Muster) judges it; its cluster_scope and
    # uncovered_default follow ``enforcement`` and ``uncovered_images``.
    namespace_guard: namespaceguard.GuardSettings = dataclasses.field(
        default_factory=namespaceguard.GuardSettings
    )
    # Vulnerability gate: trivy's cache (with db/trivy.db) or None for no scanning; an OCI
    # repository to download the DB from (None: offline), trivy processes at once, per-scan limit.
    trivy_cache_dir: Path | None = None
    trivy_db_repository: str | None = None
    scan_concurrency: int = 2
    scan_timeout: float = 300.0
    # AI-BOM: keep a WorkloadBOM per running workload in opted-in namespaces current.
    keep_boms: bool = True
    # Drift: re-judge running pods every drift_interval seconds and when policies change
    # (0: off). namespace_selector: the namespaces whose existing pods the controllers judge
    # (drift, revocation Events) when the webhooks select other than the default (opted in and
    # not opted out); None: that default.
    drift_interval: float = drift_core.DEFAULT_INTERVAL_SECONDS
    namespace_selector: selectors.LabelSelector | None = None


# Every area's settings protocol is met by OperatorSettings; mypy checks it where the areas are
# listed below.
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


GateFactory = Callable[[Services[OperatorSettings]], Sequence[gates.Gate]]
ControllerRegistrar = Callable[[kopf.OperatorRegistry, Services[OperatorSettings]], None]
ObserverFactory = Callable[[Services[OperatorSettings]], Sequence[admissions.Observer]]


def _pinning_gates(services: Services[OperatorSettings]) -> Sequence[gates.Gate]:
    del services  # the rule needs no I/O
    return [pinning.PinningGate()]


def _metrics(settings: OperatorSettings) -> metrics_.Metrics:
    return metrics_.Metrics(
        namespaces=observations.BoundedLabel(
            limit=settings.metrics_max_namespaces, allowed=settings.metrics_namespaces
        ),
        certfile=settings.webhook.tls.certfile if settings.webhook.tls else None,
    )


def _observability(services: Services[OperatorSettings]) -> Sequence[admissions.Observer]:
    return [observability_.DecisionObserver(services.metrics, services.events)]


GATE_AREAS: tuple[GateFactory, ...] = (
    _pinning_gates,
    gpupods.gates_for,
    models.gates_for,
    imagegate.gate_factory,
    vulnerabilities_.gate_factory,
)
CONTROLLER_AREAS: tuple[ControllerRegistrar, ...] = (
    gpunodes.register,
    models.controllers,
    imagegate.register_controller,
    vulnerabilities_.register_controller,
    boms_.register_controller,
    drift_.register_controller,
)
OBSERVER_AREAS: tuple[ObserverFactory, ...] = (_observability,)


def build_pipeline(services: Services[OperatorSettings]) -> admissions.Pipeline:
    """The gates every admission request goes through, built once per process."""
    settings = services.settings
    pipeline = admissions.Pipeline(
        active_gates=[gate for area in GATE_AREAS for gate in area(services)],
        own_namespace=settings.own_namespace,
        enforcement=settings.enforcement,
        deadline=settings.admission_deadline,
        observers=[observer for area in OBSERVER_AREAS for observer in area(services)],
        request_observers=[services.metrics],
        exemption_groups=settings.exemption_groups,
        auditor=exemptions_.Auditor(services.metrics, services.events),
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

    for area in CONTROLLER_AREAS:
        area(registry, services)
    return registry


async def run(settings: OperatorSettings) -> None:
    """Run until SIGINT/SIGTERM; a failing webhook server stops the operator and is raised."""
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig
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
            namespace_modes=build_namespace_modes(services),
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
