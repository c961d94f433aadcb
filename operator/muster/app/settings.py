"""The settings of one Muster process: what ``muster run`` and ``muster check`` are told.

Each area reads only its part, through the settings protocol it declares beside its code
(``ImageSettings``, ``ModelSettings``, ...); this one class meets all of them, which mypy checks
where the areas are listed (``muster.app.areas``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from muster.admission import pipeline as admissions
from muster.admission import webhooksettings as webhooks
from muster.drift.rules import passes as drift_core
from muster.guards.rules import namespaces as namespaceguard
from muster.images.rules import policies as imagepolicies
from muster.kernel import scopes, selectors
from muster.models import controllers as models
from muster.platform import registries
from muster.reports.rules import policyreports as reports_core

__all__ = ["OperatorSettings"]


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
    # PolicyReports: drift and scan results written as wgpolicyk8s.io reports after each pass,
    # at most policy_report_max_results per report; audit_namespaces: passes also judge (for the
    # reports only) namespaces in reach that have not opted in.
    policy_reports: bool = True
    policy_report_max_results: int = reports_core.DEFAULT_MAX_RESULTS
    audit_namespaces: bool = False
