"""Validating and mutating webhook configurations for development and tests.

Production configurations come from the Helm chart; these follow the same rules: only
namespaces that opt in (or, in cluster scope, every namespace), never the control plane's,
Muster's own or the excluded ones, and an opt-out label. The chart's rules, namespace selector
parts and match conditions are written from here (:func:`chart_sources`, which
``hack/generate-webhooks.py`` writes into ``charts/muster/files/webhooks.yaml``).
"""

from __future__ import annotations

from typing import Any

from muster.datasets.rules import registry as datasetregistry
from muster.guards.rules import namespaces as namespaceguard
from muster.kernel import findings, scopes, subjects, trainerpods
from muster.models.rules import registry as modelregistry

__all__ = [
    "MAY_MUTATE",
    "MAY_MUTATE_PARTS",
    "NAME",
    "NAMESPACE_MODES",
    "NOT_FROM_NODES",
    "SPEC_CHANGED_ON_UPDATE",
    "chart_sources",
    "mutating",
    "namespace_modes",
    "validating",
]

NAME = "muster.dev"
NAMESPACE_MODES = f"modes.namespaces.{NAME}"  # the record of namespace mode changes
_MODE_LABEL_VALUES = {findings.Mode.ENFORCE: ["true", "enforce"], findings.Mode.WARN: ["warn"]}


def _containers_may_mutate(field: str) -> str:
    """A container list with an image not pinned by digest (the image gate pins it), GPU
    resources (the GPU gate steers the pod) or a ``STORAGE_URI`` (the model gate verifies)."""
    nvidia = "r.startsWith('nvidia.com/')"
    return (
        f"(has(object.spec.{field}) && object.spec.{field}.exists(c, "
        "!has(c.image) || !c.image.contains('@') || "
        "(has(c.env) && c.env.exists(e, has(e.name) && e.name == 'STORAGE_URI')) || "
        "(has(c.resources) && ("
        f"(has(c.resources.limits) && c.resources.limits.exists(r, {nvidia})) || "
        f"(has(c.resources.requests) && c.resources.requests.exists(r, {nvidia}))))))"
    )


# The mutating webhooks' match condition (CEL, evaluated by the apiserver): false only for a
# plain Pod in which no gate can change anything, so the apiserver skips the call. Each part
# is one reason a gate's MUTATE phase may patch; every part errs towards calling. Anything
# other than a Pod (workloads, subresources, bindings) is always sent. The chart's copy is
# generated from it (chart_sources), and tests/integration/test_mutation_conditions.py asks the
# real apiserver to evaluate it for every kind of mutation.
MAY_MUTATE_PARTS: tuple[str, ...] = (
    "request.resource.group != ''",
    "request.resource.resource != 'pods'",
    "(has(request.subResource) && request.subResource != '')",  # omitted when empty
    "!has(object.spec)",
    # images: pinning (containers, init containers, ephemeral containers, image volumes)
    *(_containers_may_mutate(field) for field in ("containers", "initContainers")),
    "(has(object.spec.ephemeralContainers) && object.spec.ephemeralContainers.exists(c, "
    "!has(c.image) || !c.image.contains('@')))",
    # images and models: image volumes; models: claims that may hold a Model
    "(has(object.spec.volumes) && object.spec.volumes.exists(v, "
    "has(v.image) || has(v.persistentVolumeClaim)))",
    # GPUs: device claims, NVIDIA node selectors, any node affinity
    "(has(object.spec.resourceClaims) && size(object.spec.resourceClaims) > 0)",
    "(has(object.spec.nodeSelector) && object.spec.nodeSelector.exists(k, "
    "k.startsWith('nvidia.com/')))",
    "(has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity))",
    # models and datasets: declared model and dataset volumes, and KServe-style storage URIs
    # in annotations (KServe's internal storage-initializer-sourceuri among them)
    "(has(object.metadata.annotations) && object.metadata.annotations.exists(k, "
    f"k == '{modelregistry.MODEL_VOLUMES_ANNOTATION}' || "
    f"k == '{datasetregistry.DATASET_VOLUMES_ANNOTATION}' || "
    "k.matches('(?i)(storage-uri|storageuri|sourceuri)$')))",
    # models: the verifier goes right after KServe's storage-initializer (its args name the URI)
    "(has(object.spec.initContainers) && object.spec.initContainers.exists(c, "
    "has(c.name) && c.name == 'storage-initializer'))",
    # models and datasets: a pod of a JobSet (a Kubeflow TrainJob's trainer pods) re-measures
    # its TrainJob's initializer downloads (muster.kernel.trainerpods)
    f"(has(object.metadata.labels) && '{trainerpods.JOBSET_NAME_LABEL}' in object.metadata.labels)",
)
MAY_MUTATE = " || ".join(MAY_MUTATE_PARTS)

# The chart's own match conditions, each behind a value (webhook.skipNodeRequests,
# webhook.skipUnchangedSpecUpdates); development configurations leave them out.
# Kubelets only create mirror pods of static pods that already run: admission cannot stop them.
NOT_FROM_NODES = "!request.userInfo.username.startsWith('system:node:')"
# Label, annotation, finalizer and owner updates cannot change anything Muster judges (pod specs
# and pod templates all live under .spec; status updates use another subresource).
SPEC_CHANGED_ON_UPDATE = (
    "request.operation != 'UPDATE' || !has(object.spec) || !has(oldObject.spec) || "
    "object.spec != oldObject.spec"
)


def _rules() -> list[dict[str, Any]]:
    """Pods and every workload kind whose pod templates Muster judges, grouped by API group."""
    by_group: dict[str, list[str]] = {}
    for group, resource in subjects.DEFAULT_TEMPLATE_PATHS:
        by_group.setdefault(group, []).append(resource)
        if (group, resource) == ("", "pods"):
            by_group[group].extend(["bindings", "pods/binding", "pods/ephemeralcontainers"])
    return [
        {
            "apiGroups": [group],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": sorted(resources),
            "scope": "Namespaced",
        }
        for group, resources in sorted(by_group.items())
    ]


_RULES = _rules()


def _mode_expression(mode: findings.Mode, scope: scopes.Scope) -> dict[str, Any]:
    if scope is scopes.Scope.CLUSTER and mode is findings.Mode.ENFORCE:
        # Every namespace not explicitly in warn mode, with or without the label (as
        # scopes.Enforcement.labelled_mode decides it again in the handler).
        return {"key": scopes.ENFORCE_LABEL, "operator": "NotIn", "values": ["warn"]}
    return {"key": scopes.ENFORCE_LABEL, "operator": "In", "values": _MODE_LABEL_VALUES[mode]}


_OPT_OUT_EXPRESSION = {"key": scopes.OPT_OUT_LABEL, "operator": "NotIn", "values": ["true"]}


def _namespace_selector(
    mode: findings.Mode, own_namespace: str, enforcement: scopes.Enforcement
) -> dict[str, Any]:
    return {
        "matchExpressions": [
            _mode_expression(mode, enforcement.scope),
            _OPT_OUT_EXPRESSION,
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": sorted(scopes.NEVER_JUDGED | {own_namespace} | enforcement.excluded),
            },
        ]
    }


def _webhooks(
    kind: str,
    url: str,
    ca_bundle: str,
    own_namespace: str,
    timeout_seconds: int,
    enforcement: scopes.Enforcement,
) -> list[dict[str, Any]]:
    hooks = []
    for mode in findings.Mode:
        hook: dict[str, Any] = {
            "name": f"{mode.value}.{kind}.pods.{NAME}",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
            # Enforce fails closed; warn mode must never block a namespace when Muster is down.
            "failurePolicy": "Fail" if mode is findings.Mode.ENFORCE else "Ignore",
            "clientConfig": {
                "url": f"{url.rstrip('/')}/{kind}/{mode.value}",
                "caBundle": ca_bundle,
            },
            "rules": _RULES,
            "namespaceSelector": _namespace_selector(mode, own_namespace, enforcement),
        }
        if kind == "mutate":
            hook["reinvocationPolicy"] = "IfNeeded"
            hook["matchConditions"] = [{"name": "may-mutate", "expression": MAY_MUTATE}]
        hooks.append(hook)
    return hooks


def validating(
    url: str,
    ca_bundle: str,
    *,
    own_namespace: str,
    timeout_seconds: int = 10,
    enforcement: scopes.Enforcement = scopes.NAMESPACED,
) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/name": "muster"}},
        "webhooks": _webhooks(
            "validate", url, ca_bundle, own_namespace, timeout_seconds, enforcement
        ),
    }


_NAMESPACE_MODES_RULES = [
    {
        "apiGroups": [""],
        "apiVersions": ["*"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["namespaces", "namespaces/*"],
        "scope": "Cluster",
    }
]


def namespace_modes(
    url: str, ca_bundle: str, guard: namespaceguard.GuardSettings, timeout_seconds: int = 10
) -> dict[str, Any]:
    """The record of namespace mode changes: a mutating webhook on Namespaces that never
    patches or refuses (muster.guards.rules.namespaces says why mutating). It is sent only the
    requests that touch a watched label, never dry runs, and Muster being down never blocks
    a namespace change."""
    return {
        "name": NAMESPACE_MODES,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": min(timeout_seconds, namespaceguard.RECORD_TIMEOUT_SECONDS),
        "failurePolicy": "Ignore",
        "reinvocationPolicy": "Never",
        "clientConfig": {
            "url": f"{url.rstrip('/')}{namespaceguard.RECORD_PATH}",
            "caBundle": ca_bundle,
        },
        "rules": _NAMESPACE_MODES_RULES,
        "matchConditions": [
            {"name": "not-a-dry-run", "expression": namespaceguard.NOT_A_DRY_RUN},
            {"name": "watched-label-changed", "expression": namespaceguard.record_condition(guard)},
        ],
    }


def mutating(
    url: str,
    ca_bundle: str,
    *,
    own_namespace: str,
    timeout_seconds: int = 10,
    enforcement: scopes.Enforcement = scopes.NAMESPACED,
    namespace_guard: namespaceguard.GuardSettings | None = None,
) -> dict[str, Any]:
    """With ``namespace_guard``, the record of namespace mode changes too (the chart always
    has it; test suites of their own leave it to the session's operator)."""
    hooks = _webhooks("mutate", url, ca_bundle, own_namespace, timeout_seconds, enforcement)
    if namespace_guard is not None:
        hooks.append(namespace_modes(url, ca_bundle, namespace_guard, timeout_seconds))
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/name": "muster"}},
        "webhooks": hooks,
    }


def chart_sources() -> dict[str, Any]:
    """What the chart builds its webhooks from, so that they cannot differ from these: the pod
    webhooks' rules, the parts of their namespace selector (per scope and mode), their match
    conditions by name, and the record of namespace mode changes' name, path, longest timeout
    and rules. Its match conditions come from files/namespace-guard.yaml."""
    return {
        "pods": {
            "rules": _RULES,
            "modeExpressions": {
                scope.value: {mode.value: _mode_expression(mode, scope) for mode in findings.Mode}
                for scope in scopes.Scope
            },
            "optOutExpression": _OPT_OUT_EXPRESSION,
            "neverJudged": sorted(scopes.NEVER_JUDGED),
            "matchConditions": {
                "not-from-nodes": NOT_FROM_NODES,
                "spec-changed-on-update": SPEC_CHANGED_ON_UPDATE,
                "may-mutate": MAY_MUTATE,
            },
        },
        "namespaceModes": {
            "name": NAMESPACE_MODES,
            "path": namespaceguard.RECORD_PATH,
            "maxTimeoutSeconds": namespaceguard.RECORD_TIMEOUT_SECONDS,
            "rules": _NAMESPACE_MODES_RULES,
        },
    }
