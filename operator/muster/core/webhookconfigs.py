"""Validating and mutating webhook configurations for development and tests.

Production configurations come from the Helm chart; these follow the same rules: only
namespaces that opt in, never the control plane's or Muster's own, and an opt-out label.
"""

from __future__ import annotations

from typing import Any

from muster.core import findings, scopes, subjects

__all__ = ["NAME", "mutating", "validating"]

NAME = "muster.dev"
_MODE_LABEL_VALUES = {findings.Mode.ENFORCE: ["true", "enforce"], findings.Mode.WARN: ["warn"]}


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


def _namespace_selector(mode: findings.Mode, own_namespace: str) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": scopes.ENFORCE_LABEL, "operator": "In", "values": _MODE_LABEL_VALUES[mode]},
            {"key": scopes.OPT_OUT_LABEL, "operator": "NotIn", "values": ["true"]},
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": sorted(scopes.NEVER_JUDGED | {own_namespace}),
            },
        ]
    }


def _webhooks(
    kind: str, url: str, ca_bundle: str, own_namespace: str, timeout_seconds: int
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
            "namespaceSelector": _namespace_selector(mode, own_namespace),
        }
        if kind == "mutate":
            hook["reinvocationPolicy"] = "IfNeeded"
        hooks.append(hook)
    return hooks


def validating(
    url: str, ca_bundle: str, *, own_namespace: str, timeout_seconds: int = 10
) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/name": "muster"}},
        "webhooks": _webhooks("validate", url, ca_bundle, own_namespace, timeout_seconds),
    }


def mutating(
    url: str, ca_bundle: str, *, own_namespace: str, timeout_seconds: int = 10
) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/name": "muster"}},
        "webhooks": _webhooks("mutate", url, ca_bundle, own_namespace, timeout_seconds),
    }
