"""Muster's Prometheus metrics: one registry per process (never the global default one).

Every metric is listed, with its labels and what to do about it, in ``docs/observability.md``.
Cardinality is bounded: no pod names, image references or digests are labels;
``resource_namespace`` (the judged object's namespace; ``namespace`` is the scrape target's own
label, so a ServiceMonitor would rename it to ``exported_namespace``) and ``registry`` values
pass through :class:`muster.kernel.observations.BoundedLabel` (an allowlist, or the first N values
seen; the rest become ``other``). Labelled children of the
known checks and states are created at start, so every dashboard panel has a series (at zero)
even before the first event.

Gate owners call the small functions here (:meth:`Metrics.cache_lookup`,
:meth:`Metrics.exemption_used`, :meth:`Metrics.set_gpu_nodes`, :meth:`Metrics.set_models`,
:meth:`Metrics.set_pods_using_revoked_models`, :meth:`Metrics.set_drifted_pods`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prometheus_client
from cryptography import x509
from prometheus_client import core as prometheus_core
from prometheus_client import registry as prometheus_registry

import muster
from muster.kernel import findings, gates, observations, subjects
from muster.platform import statechanges

if TYPE_CHECKING:  # the web server is loaded where /metrics is served, not by every command
    from aiohttp import web

__all__ = [
    "GPU_NODE_STATES",
    "LATENCY_BUCKETS",
    "MODEL_STATES",
    "REGISTRY_OUTCOMES",
    "REQUEST_BUCKETS",
    "Labels",
    "Metrics",
    "serve",
]

logger = logging.getLogger("muster.metrics")

GPU_NODE_STATES = ("compliant", "noncompliant", "unknown")
MODEL_STATES = ("approved", "revoked", "invalid")
REGISTRY_OUTCOMES = (
    "success",
    "not_found",
    "unauthorized",
    "throttled",
    "server_error",
    "unreachable",
    "error",
)
OPERATIONS = ("CREATE", "UPDATE")
DECISIONS = ("allowed", "warned", "denied")
# Admission is answered in milliseconds when caches are warm and in seconds when a registry is
# slow; the deadline is 8 s and the webhook timeout 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 8, 10)
# Whole requests, arrival to answer: fine steps around the internal deadline (8 s by default,
# lower when the webhook timeout is) and the webhook timeout (10 s by default, at most 30 s), so
# that the p99 against both reads off the buckets rather than interpolating across seconds.
REQUEST_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 30,
)  # fmt: skip
ERROR_REASONS = ("DeadlineExceeded", "InternalError")
# Why a request got no real verdict, once per request (muster.admission.pipeline).
REQUEST_ERRORS = ("DeadlineExceeded", "InternalError", "MalformedReview", "PipelineFailed")
MODES = tuple(mode.value for mode in findings.Mode)
SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")  # trivy's, bounded


@dataclasses.dataclass(frozen=True)
class Labels:
    """Label values whose series exist from the start (others appear when first used).

    They come from the areas' declarations (``muster.admission.areas``), not from a list kept
    here: the gates' checks, their caches, the checks drift re-runs, and the namespace modes.
    """

    checks: tuple[str, ...] = ()
    caches: tuple[str, ...] = ()
    drift_checks: tuple[str, ...] = ()
    namespace_modes: tuple[str, ...] = ()


class _CertificateExpiry(prometheus_registry.Collector):
    """``notAfter`` of the serving certificate, read at scrape time (rotation is picked up)."""

    def __init__(self, certfile: Path | None) -> None:
        self.certfile = certfile

    def collect(self) -> Iterator[prometheus_core.Metric]:
        family = prometheus_core.GaugeMetricFamily(
            "muster_webhook_certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate expires (Unix time).",
        )
        if self.certfile is not None:
            try:
                certificate = x509.load_pem_x509_certificate(self.certfile.read_bytes())
            except (OSError, ValueError) as error:
                logger.warning("cannot read the webhook certificate: %s", error)
            else:
                family.add_metric([], certificate.not_valid_after_utc.timestamp())
        yield family


class Metrics:
    """All of Muster's metrics on one fresh registry."""

    def __init__(
        self,
        *,
        namespaces: observations.BoundedLabel | None = None,
        registries: observations.BoundedLabel | None = None,
        certfile: Path | None = None,
        labels: Labels | None = None,
    ) -> None:
        self.labels = labels or Labels()
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        # The labelled series of every admission, looked up once: ``labels()`` takes a lock
        # and builds its key each time, several times per request. Only bounded labels.
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.namespaces = namespaces or observations.BoundedLabel(limit=100)
        self.registries = registries or observations.BoundedLabel(limit=20)
        r = self.registry
        self.build_info = prometheus_client.Gauge(
            "muster_build_info", "Muster's version (always 1).", ["version"], registry=r
        )
        self.build_info.labels(muster.__version__).set(1)
        self.admission_requests = prometheus_client.Counter(
            "muster_admission_requests",
            "Admission requests judged, by operation, phase and decision.",
            ["operation", "phase", "decision"],
            registry=r,
        )
        self.admission_duration = prometheus_client.Histogram(
            "muster_admission_duration_seconds",
            "Time each gate took to judge one admission request.",
            ["gate"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_duration = prometheus_client.Histogram(
            "muster_admission_request_duration_seconds",
            "Time from a webhook request's arrival to its answer, every request (those cut off "
            "at the deadline and those that failed too), by phase and mode.",
            ["phase", "mode"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.request_errors = prometheus_client.Counter(
            "muster_admission_request_errors",
            "Requests answered without a real verdict (denied in enforce, warned in warn, or "
            "refused when malformed), once per request, by phase, mode and reason.",
            ["phase", "mode", "reason"],
            registry=r,
        )
        self.admission_errors = prometheus_client.Counter(
            "muster_admission_errors",
            "Gates that timed out or failed while judging (the request was denied or warned).",
            ["gate", "reason"],
            registry=r,
        )
        self.violations = prometheus_client.Counter(
            "muster_violations",
            "Findings reported at validation, by check, reason, mode and namespace.",
            ["check", "reason", "mode", "resource_namespace"],
            registry=r,
        )
        self.registry_requests = prometheus_client.Counter(
            "muster_registry_requests",
            "HTTP requests to OCI registries, by registry host and outcome.",
            ["registry", "outcome"],
            registry=r,
        )
        self.registry_duration = prometheus_client.Histogram(
            "muster_registry_request_duration_seconds",
            "Duration of HTTP requests to OCI registries.",
            ["registry", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_requests = prometheus_client.Counter(
            "muster_verification_cache_requests",
            "Verification cache look-ups, by cache and result (hit or miss).",
            ["cache", "result"],
            registry=r,
        )
        self.gpu_nodes = prometheus_client.Gauge(
            "muster_gpu_nodes",
            "GPU nodes by GPU-stack compliance state.",
            ["state"],
            registry=r,
        )
        self.models = prometheus_client.Gauge(
            "muster_models", "Registered models by state.", ["state"], registry=r
        )
        self.pods_using_revoked_models = prometheus_client.Gauge(
            "muster_pods_using_revoked_models",
            "Pods that mount a model whose approval was revoked.",
            registry=r,
        )
        self.pods_using_models_trained_on_revoked_data = prometheus_client.Gauge(
            "muster_pods_using_models_trained_on_revoked_data",
            "Running pods that use a model trained on a dataset revoked directly or through "
            "its lineage.",
            registry=r,
        )
        self.pods_using_revoked_datasets = prometheus_client.Gauge(
            "muster_pods_using_revoked_datasets",
            "Running pods that use a dataset revoked directly or through its lineage.",
            registry=r,
        )
        self.drifted_pods = prometheus_client.Gauge(
            "muster_drifted_pods",
            "Existing pods that would no longer pass a check (policy or facts changed).",
            ["check"],
            registry=r,
        )
        self.images_passed_unsigned = prometheus_client.Counter(
            "muster_images_passed_unsigned",
            "Images admitted without a signature by a static-pass ImagePolicy, by policy and "
            "namespace (one per image use, at validation).",
            ["policy", "resource_namespace"],
            registry=r,
        )
        self.namespace_mode_changes = prometheus_client.Counter(
            "muster_namespace_mode_changes",
            "Attempts to change a namespace's Muster mode (or a protected label), by the mode "
            "before and after and whether the namespace guard allowed or refused it.",
            ["from", "to", "outcome"],
            registry=r,
        )
        self.exemptions = prometheus_client.Counter(
            "muster_exemptions_used",
            "Requests let through by an exemption that a rule would have stopped.",
            ["check", "resource_namespace"],
            registry=r,
        )
        self.events = prometheus_client.Counter(
            "muster_events",
            "Kubernetes Events written, by outcome (created, updated, dropped, failed).",
            ["outcome"],
            registry=r,
        )
        self.image_scans = prometheus_client.Counter(
            "muster_image_scans",
            "Image vulnerability scans run, by outcome (scanned, failed).",
            ["outcome"],
            registry=r,
        )
        self.image_vulnerabilities = prometheus_client.Gauge(
            "muster_image_vulnerabilities",
            "Vulnerabilities in the scanned image digests Muster knows, by severity.",
            ["severity"],
            registry=r,
        )
        r.register(_CertificateExpiry(certfile))
        # The process' CPU, memory and file descriptors, and the Python runtime, for the
        # dashboard's process panels (this registry is not the default one that has them).
        prometheus_client.ProcessCollector(registry=r)
        prometheus_client.PlatformCollector(registry=r)
        prometheus_client.GCCollector(registry=r)
        self._initialise()

    def _initialise(self) -> None:
        for phase in gates.Phase:
            for mode in MODES:
                self.request_duration.labels(phase.value, mode)
                for reason in REQUEST_ERRORS:
                    self.request_errors.labels(phase.value, mode, reason)
        for operation in OPERATIONS:
            for phase in gates.Phase:
                for decision in DECISIONS:
                    self.admission_requests.labels(operation, phase.value, decision)
        for check in self.labels.checks:
            self.admission_duration.labels(check)
            for reason in ERROR_REASONS:
                self.admission_errors.labels(check, reason)
            self.exemptions.labels(check, observations.OTHER)
        self._caches = set(self.labels.caches)
        for cache in self.labels.caches:
            for result in ("hit", "miss"):
                self.cache_requests.labels(cache, result)
        for state in GPU_NODE_STATES:
            self.gpu_nodes.labels(state).set(0)
        for state in MODEL_STATES:
            self.models.labels(state).set(0)
        for check in self.labels.drift_checks:
            self.drifted_pods.labels(check).set(0)
        for outcome in ("created", "updated", "dropped", "failed"):
            self.events.labels(outcome)
        for outcome in ("scanned", "failed"):
            self.image_scans.labels(outcome)
        for before in self.labels.namespace_modes:
            for after in self.labels.namespace_modes:
                for outcome in ("allowed", "refused"):
                    self.namespace_mode_changes.labels(before, after, outcome)
        for severity in SEVERITIES:
            self.image_vulnerabilities.labels(severity).set(0)

    # -- admission ------------------------------------------------------------------------

    def admission(
        self,
        subject: subjects.Subject,
        phase: gates.Phase,
        verdict: findings.Verdict,
        durations: Mapping[str, float],
    ) -> None:
        decision = "denied" if verdict.denials else "warned" if verdict.warnings else "allowed"
        operation = subject.operation if subject.operation in OPERATIONS else "other"
        self._series_of(self.admission_requests, operation, phase.value, decision).inc()
        for gate, seconds in durations.items():
            self._series_of(self.admission_duration, gate).observe(seconds)
        reported = (*verdict.denials, *verdict.warnings)
        for finding in reported:
            if finding.reason in ERROR_REASONS:
                self.admission_errors.labels(finding.check, finding.reason).inc()
        if phase is not gates.Phase.VALIDATE:
            return  # mutation repeats what validation reports: count each finding once
        namespace = self.namespaces(subject.namespace)
        for finding in reported:
            if finding.reason == observations.PASSED_UNSIGNED:
                # Admitted as a policy says: not a violation, but never silent.
                policy = finding.policy.name if finding.policy is not None else ""
                self.images_passed_unsigned.labels(policy, namespace).inc()
                continue
            self.violations.labels(
                finding.check, finding.reason, finding.mode.value, namespace
            ).inc()

    def _series_of(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*values)
        return series

    def answered(
        self, phase: gates.Phase, mode: findings.Mode, seconds: float, error: str | None
    ) -> None:
        """A ``RequestObserver`` (muster.admission.pipeline): one call per webhook answer."""
        self._series_of(self.request_duration, phase.value, mode.value).observe(seconds)
        if error is not None:
            # A metric label, not a finding's reason: the answer itself names no reason code.
            label = error if error in REQUEST_ERRORS else "PipelineFailed"
            self.request_errors.labels(phase.value, mode.value, label).inc()

    # -- for the gates ----------------------------------------------------------------------

    def registry_request(self, registry: str, outcome: str, seconds: float) -> None:
        """The ``RegistryClient.observer`` hook: one call per HTTP round trip."""
        host = self.registries(registry)
        outcome = outcome if outcome in REGISTRY_OUTCOMES else "error"
        self.registry_requests.labels(host, outcome).inc()
        self.registry_duration.labels(host, outcome).observe(seconds)

    def cache_lookup(self, cache: str, *, hit: bool) -> None:
        if cache not in self._caches:  # a cache not declared up front: both series at once
            self._caches.add(cache)
            for result in ("hit", "miss"):
                self.cache_requests.labels(cache, result)
        self._series_of(self.cache_requests, cache, "hit" if hit else "miss").inc()
        # A verdict answered again without judging counts its look-ups again.
        statechanges.record(self.cache_lookup, cache, hit=hit)

    def exemption_used(self, check: str, namespace: str) -> None:
        self.exemptions.labels(check, self.namespaces(namespace)).inc()

    def set_gpu_nodes(self, counts: Mapping[str, int]) -> None:
        for state in {*GPU_NODE_STATES, *counts}:
            self.gpu_nodes.labels(state).set(counts.get(state, 0))

    def set_models(self, counts: Mapping[str, int]) -> None:
        for state in {*MODEL_STATES, *counts}:
            self.models.labels(state).set(counts.get(state, 0))

    def set_pods_using_revoked_models(self, count: int) -> None:
        self.pods_using_revoked_models.set(count)

    def set_pods_using_models_trained_on_revoked_data(self, count: int) -> None:
        self.pods_using_models_trained_on_revoked_data.set(count)

    def set_pods_using_revoked_datasets(self, count: int) -> None:
        self.pods_using_revoked_datasets.set(count)

    def set_drifted_pods(self, check: str, count: int) -> None:
        self.drifted_pods.labels(check).set(count)

    def image_scanned(self, *, ok: bool) -> None:
        self.image_scans.labels("scanned" if ok else "failed").inc()

    def set_image_vulnerabilities(self, counts: Mapping[str, int]) -> None:
        for severity in SEVERITIES:
            self.image_vulnerabilities.labels(severity).set(counts.get(severity, 0))

    def namespace_mode_change(self, before: str, after: str, outcome: str) -> None:
        """One attempt to change a namespace's mode (``muster.guards.rules.namespaces``)."""
        self.namespace_mode_changes.labels(before, after, outcome).inc()

    def event_outcome(self, outcome: str) -> None:
        self.events.labels(outcome).inc()

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


def build_app(metrics: Metrics) -> web.Application:
    from aiohttp import web

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def serve(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """Start serving ``/metrics`` over plain HTTP; the caller cleans the runner up."""
    from aiohttp import web

    runner = web.AppRunner(build_app(metrics), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        raise
    logger.info("serving metrics on http://%s:%d/metrics", host, port)
    return runner
