"""What the model and dataset gate suites share: the admin's custom objects, waiting for the
operator to index a Model or Dataset, pods that mount volumes, and creating them to be admitted
or denied."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from muster.kernel import crds
from muster.platform import controlplane
from tests import kubeclients
from tests.e2e.gpu.conftest import warnings_of

__all__ = [
    "GROUP",
    "TRAINER",
    "VERSION",
    "create_as_admin",
    "create_pod",
    "create_pod_warned",
    "denial",
    "denial_as_admin",
    "eventually",
    "image_volume",
    "mounting_pod",
    "objects",
    "observed",
    "plane",
    "registered",
]

GROUP, VERSION = crds.GROUP, crds.VERSION
TRAINER = "registry.example/team/trainer@sha256:" + "ab" * 32


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """The first truthy answer of ``check``, asked every 0.2 s for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def plane(control_plane: controlplane.ControlPlane) -> controlplane.ControlPlane:
    return control_plane


@pytest.fixture(scope="module")
def objects(control_plane: controlplane.ControlPlane) -> Iterator[Any]:
    """The admin's CustomObjectsApi."""
    with kubeclients.admin(control_plane) as api:
        yield client.CustomObjectsApi(api)


def observed(objects: Any, plural: str, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """The custom object once the operator wrote its status for a generation: it has indexed
    it."""

    def indexed() -> dict[str, Any] | None:
        found: dict[str, Any] = objects.get_cluster_custom_object(GROUP, VERSION, plural, name)
        return found if (found.get("status") or {}).get("observedGeneration") else None

    found: dict[str, Any] = eventually(indexed, f"{plural}/{name} status", timeout)
    return found


def registered(
    objects: Any, plural: str, kind: str, name: str, spec: Any, timeout: float = 30.0
) -> dict[str, Any]:
    """A Model or Dataset created as the admin, once the operator has indexed it."""
    kubeclients.create_cluster_object(objects, plural, kind, name, spec)
    return observed(objects, plural, name, timeout)


def mounting_pod(
    name: str,
    volumes: list[dict[str, Any]],
    annotations: dict[str, str] | None = None,
    *,
    labels: dict[str, str] | None = None,
    init: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A pod whose one container (the trainer image) mounts each of ``volumes``."""
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": TRAINER,
                "volumeMounts": [
                    {"name": v["name"], "mountPath": f"/m/{v['name']}"} for v in volumes
                ],
            }
        ],
        "volumes": volumes,
    }
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def image_volume(name: str, reference: str) -> dict[str, Any]:
    return {"name": name, "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}


def create_pod_warned(
    api: client.ApiClient, namespace: str, body: dict[str, Any]
) -> tuple[Any, list[str]]:
    """The created pod, and the warnings the apiserver passed on."""
    core: Any = client.CoreV1Api(api)  # plain dicts are valid bodies; the stubs say models
    created, _, headers = core.create_namespaced_pod_with_http_info(namespace, body)
    return created, warnings_of(headers)


def create_pod(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    core: Any = client.CoreV1Api(api)  # plain dicts are valid bodies; the stubs say models
    return core.create_namespaced_pod(namespace, body)


def denial(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> str:
    """The message of the 403 that creating the pod ``body`` is answered with."""
    with pytest.raises(client.ApiException) as raised:
        create_pod(api, namespace, body)
    assert raised.value.status == 403, raised.value.body
    return str(json.loads(raised.value.body or "{}")["message"])


def create_as_admin(plane: controlplane.ControlPlane, namespace: str, body: dict[str, Any]) -> Any:
    with kubeclients.admin(plane) as api:
        return create_pod(api, namespace, body)


def denial_as_admin(plane: controlplane.ControlPlane, namespace: str, body: dict[str, Any]) -> str:
    with kubeclients.admin(plane) as api:
        return denial(api, namespace, body)
