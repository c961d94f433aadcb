"""Kubernetes clients for tests: as the admin, or as a ServiceAccount holding only its RBAC."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kubernetes import client

from muster.kernel import crds
from muster.platform import controlplane, kubesetup


def admin(plane: controlplane.ControlPlane) -> client.ApiClient:
    return kubesetup.api_client(plane.kubeconfig)


def service_account(
    plane: controlplane.ControlPlane, namespace: str, name: str
) -> client.ApiClient:
    """A client authenticated by a real token the apiserver signed for ``namespace/name``."""
    with admin(plane) as api:
        core = client.CoreV1Api(api)
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except client.ApiException as error:
            if error.status != 409:
                raise
        token = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": 3600}}
        ).status.token
    configuration = client.Configuration()
    configuration.host = plane.url
    configuration.ssl_ca_cert = plane.state.ca_file
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(configuration)


def user(name: str) -> dict[str, str]:
    """An RBAC subject: the user ``name``."""
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def bind_cluster_role(
    plane: controlplane.ControlPlane,
    role: str,
    rules: Iterable[Mapping[str, Any]],
    subjects: Iterable[Mapping[str, str]],
) -> None:
    """A ClusterRole ``role`` holding ``rules``, and a ClusterRoleBinding of the same name that
    grants it to ``subjects``."""
    with admin(plane) as api:
        rbac: Any = client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role({"metadata": {"name": role}, "rules": list(rules)})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": role},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": list(subjects),
            }
        )


def namespace(
    plane: controlplane.ControlPlane, prefix: str, labels: Mapping[str, str] | None = None
) -> str:
    """A fresh namespace (the control plane is shared by the session)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    with admin(plane) as api:
        kubesetup.ensure_namespace(api, name, labels)
    return name


def pod(name: str, *images: str, init_images: tuple[str, ...] = ()) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "initContainers": [
                {"name": f"init-{i}", "image": image} for i, image in enumerate(init_images)
            ],
            "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
        },
    }


def create_cluster_object(
    objects: client.CustomObjectsApi, plural: str, kind: str, name: str, spec: Any
) -> None:
    """Create one of Muster's cluster-scoped custom resources (a policy, a Model)."""
    objects.create_cluster_custom_object(
        crds.GROUP,
        crds.VERSION,
        plural,
        {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def create_muster_object(
    plane: controlplane.ControlPlane, plural: str, kind: str, name: str, spec: Any
) -> None:
    """:func:`create_cluster_object` as the admin."""
    with admin(plane) as api:
        create_cluster_object(client.CustomObjectsApi(api), plural, kind, name, spec)


@contextlib.contextmanager
def muster_object(
    plane: controlplane.ControlPlane, plural: str, kind: str, name: str, spec: Any
) -> Iterator[str]:
    """:func:`create_muster_object` for the length of the block, deleted after; yields the name."""
    create_muster_object(plane, plural, kind, name, spec)
    try:
        yield name
    finally:
        with admin(plane) as api:
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                crds.GROUP, crds.VERSION, plural, name
            )
