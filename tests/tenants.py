"""A tenant with ordinary rights, as the attacker of the trust-boundary tests.

A tenant is a ServiceAccount authenticated by a real token the apiserver signed. It may read,
patch and update its own Namespace object (and no other), and create, update and patch pods,
their ephemeral containers and every workload kind in that namespace: the rights a platform
commonly hands a team. Everything it tries goes through the real apiserver, RBAC and admission.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from kubernetes import client

from muster.platform import controlplane
from tests import kubeclients

__all__ = ["WORKLOAD_RULES", "Tenant", "tenant"]

_WRITE = ["get", "list", "watch", "create", "update", "patch", "delete"]

# Pods and every workload kind Muster judges, in the groups a cluster may serve them from.
WORKLOAD_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["pods", "pods/ephemeralcontainers"], "verbs": _WRITE},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "update", "patch"]},
    {"apiGroups": [""], "resources": ["pods/binding", "bindings"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims", "configmaps"], "verbs": _WRITE},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
        "verbs": _WRITE,
    },
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": _WRITE},
    {
        "apiGroups": ["kubeflow.org"],
        "resources": ["pytorchjobs", "tfjobs", "mpijobs"],
        "verbs": _WRITE,
    },
    {
        "apiGroups": ["trainer.kubeflow.org"],
        "resources": ["trainjobs", "trainingruntimes"],
        "verbs": _WRITE,
    },
    {"apiGroups": ["ray.io"], "resources": ["rayclusters", "rayjobs"], "verbs": _WRITE},
    {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": _WRITE},
)


@dataclasses.dataclass(frozen=True)
class Tenant:
    """A tenant's identity and namespace; ``api()`` is a client holding only its RBAC."""

    plane: controlplane.ControlPlane
    namespace: str
    name: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    def api(self) -> client.ApiClient:
        return kubeclients.service_account(self.plane, self.namespace, self.name)

    def patch_namespace_labels(self, labels: dict[str, str | None]) -> None:
        """Patch the tenant's own Namespace labels (``None`` removes one), as the tenant."""
        with contextlib.closing(self.api()) as api:
            core: Any = client.CoreV1Api(api)
            core.patch_namespace(self.namespace, {"metadata": {"labels": labels}})


def tenant(plane: controlplane.ControlPlane, namespace: str, name: str = "tenant") -> Tenant:
    """Grant ``namespace/name`` a tenant's rights over its own namespace (which must exist)."""
    role = f"tenant-{namespace}-{name}"
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    own_namespace = {
        "apiGroups": [""],
        "resources": ["namespaces"],
        "resourceNames": [namespace],
        "verbs": ["get", "patch", "update"],
    }
    kubeclients.bind_cluster_role(plane, role, [own_namespace], [subject])
    with kubeclients.admin(plane) as api:
        rbac: Any = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace, {"metadata": {"name": role}, "rules": list(WORKLOAD_RULES)}
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [subject],
            },
        )
    return Tenant(plane=plane, namespace=namespace, name=name)
