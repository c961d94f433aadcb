"""Small, explicit helpers over the official Kubernetes client for set-up work (not hot paths)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

__all__ = [
    "api_client",
    "apply_admission_policy",
    "apply_custom_resource_definition",
    "apply_webhook_configuration",
    "ensure_namespace",
]


def api_client(kubeconfig: Path) -> client.ApiClient:
    made: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return made


def ensure_namespace(
    api: client.ApiClient, name: str, labels: Mapping[str, str] | None = None
) -> None:
    """Create the namespace, or merge ``labels`` into an existing one."""
    core: Any = client.CoreV1Api(api)  # plain dicts are valid bodies; the stubs say models
    body = {"metadata": {"name": name, "labels": dict(labels or {})}}
    try:
        core.create_namespace(body)
    except ApiException as error:
        if error.status != 409:
            raise
        if labels:
            core.patch_namespace(name, {"metadata": {"labels": dict(labels)}})


# The admission objects Muster applies, by kind: the client methods' common suffix.
_WEBHOOK_CONFIGURATIONS = {
    "ValidatingWebhookConfiguration": "validating_webhook_configuration",
    "MutatingWebhookConfiguration": "mutating_webhook_configuration",
}
_ADMISSION_POLICIES = {
    "ValidatingAdmissionPolicy": "validating_admission_policy",
    "ValidatingAdmissionPolicyBinding": "validating_admission_policy_binding",
}


def _apply_admission_object(
    api: client.ApiClient, manifest: Mapping[str, Any], kinds: Mapping[str, str], what: str
) -> None:
    kind = manifest["kind"]
    if kind not in kinds:
        raise ValueError(f"not {what}: {kind}")
    admission: Any = client.AdmissionregistrationV1Api(api)
    suffix = kinds[kind]
    _create_or_replace(
        manifest,
        getattr(admission, f"create_{suffix}"),
        getattr(admission, f"read_{suffix}"),
        getattr(admission, f"replace_{suffix}"),
    )


def apply_webhook_configuration(api: client.ApiClient, manifest: Mapping[str, Any]) -> None:
    """Create or replace a Validating/MutatingWebhookConfiguration given as a plain dict."""
    _apply_admission_object(api, manifest, _WEBHOOK_CONFIGURATIONS, "a webhook configuration")


def apply_admission_policy(api: client.ApiClient, manifest: Mapping[str, Any]) -> None:
    """Create or replace a ValidatingAdmissionPolicy or its Binding given as a plain dict."""
    _apply_admission_object(
        api, manifest, _ADMISSION_POLICIES, "a validating admission policy or binding"
    )


def _create_or_replace(
    manifest: Mapping[str, Any],
    create: Callable[[Mapping[str, Any]], Any],
    read: Callable[[str], Any],
    replace: Callable[[str, Mapping[str, Any]], Any],
) -> None:
    """Create a cluster-scoped object; if it exists, replace it at its current version."""
    try:
        create(manifest)
    except ApiException as error:
        if error.status != 409:
            raise
        name = manifest["metadata"]["name"]
        current = read(name)
        body = dict(manifest)
        body["metadata"] = {
            **manifest["metadata"],
            "resourceVersion": current.metadata.resource_version,
        }
        replace(name, body)


def apply_custom_resource_definition(api: client.ApiClient, manifest: Mapping[str, Any]) -> None:
    """Create or replace a CRD given as a plain dict, then wait until it is established."""
    extensions: Any = client.ApiextensionsV1Api(api)
    name = manifest["metadata"]["name"]
    _create_or_replace(
        manifest,
        extensions.create_custom_resource_definition,
        extensions.read_custom_resource_definition,
        extensions.replace_custom_resource_definition,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.1)
    raise TimeoutError(f"CRD {name} was not established within 30s")
