"""Image signatures through the real apiserver: ImagePolicy status, Deployments at apply time,
pods created by the real controller-manager pinned by digest."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from muster.kernel import crds
from muster.platform import controlplane
from tests import kubeclients, peers
from tests.e2e.images.conftest import SELECT_LABEL
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("image_operator")]

_T = TypeVar("_T")


def eventually(probe: Callable[[], _T | None], what: str, timeout: float = 30) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _policies(plane: controlplane.ControlPlane) -> tuple[Any, client.ApiClient]:
    api = kubeclients.admin(plane)
    return client.CustomObjectsApi(api), api


def create_policy(plane: controlplane.ControlPlane, name: str, spec: dict[str, Any]) -> None:
    objects, api = _policies(plane)
    with api:
        objects.create_cluster_custom_object(
            crds.GROUP,
            crds.VERSION,
            "imagepolicies",
            {
                "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
                "kind": "ImagePolicy",
                "metadata": {"name": name},
                "spec": spec,
            },
        )


def compiled_condition(plane: controlplane.ControlPlane, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        objects, api = _policies(plane)
        with api:
            obj = objects.get_cluster_custom_object(crds.GROUP, crds.VERSION, "imagepolicies", name)
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Compiled":
                return dict(condition)
        return None

    return eventually(probe, f"ImagePolicy {name} status")


def delete_policy(plane: controlplane.ControlPlane, name: str) -> None:
    objects, api = _policies(plane)
    with api:
        objects.delete_cluster_custom_object(crds.GROUP, crds.VERSION, "imagepolicies", name)


def deployment(name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "trainer", "image": image}]},
            },
        },
    }


@pytest.fixture(scope="module")
def signed_policy(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
) -> Iterator[tuple[str, str]]:
    """A policy trusting alice for the registry's e2e/ images in opted-in namespaces."""
    name = f"e2e-images-{uuid.uuid4().hex[:6]}"
    create_policy(
        control_plane,
        name,
        {
            "images": [f"{registry.host}/e2e/**"],
            "namespaceSelector": {
                "matchExpressions": [{"key": SELECT_LABEL, "operator": "Exists"}]
            },
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
    )
    yield name, registry.host
    delete_policy(control_plane, name)


def test_policy_created_through_the_api_compiles(
    control_plane: controlplane.ControlPlane, signed_policy: tuple[str, str]
) -> None:
    condition = compiled_condition(control_plane, signed_policy[0])
    assert condition["status"] == "True", condition
    assert condition["reason"] == "Compiled"


def test_bad_policy_reports_why_it_does_not_compile(
    control_plane: controlplane.ControlPlane,
) -> None:
    name = f"e2e-broken-{uuid.uuid4().hex[:6]}"
    create_policy(
        control_plane,
        name,
        {
            "images": ["broken.example/**"],
            "namespaceSelector": {"matchLabels": {SELECT_LABEL: "none"}},
            "authorities": [
                {
                    "keyless": {
                        "identities": [{"issuer": "https://issuer", "subject": "ci"}],
                        "trustedRoot": {"namespace": "sigstore", "name": "missing-root"},
                    }
                }
            ],
        },
    )
    try:
        condition = compiled_condition(control_plane, name)
        assert condition["status"] == "False", condition
        assert condition["reason"] == "CompileFailed"
        assert (
            "ConfigMap sigstore/missing-root key 'trusted_root.json' was not found"
            in (condition["message"])
        )
    finally:
        delete_policy(control_plane, name)


def test_unsigned_deployment_is_rejected_at_apply_time(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signed_policy: tuple[str, str],
    tmp_path: Path,
) -> None:
    compiled_condition(control_plane, signed_policy[0])
    peers.push_image(registry, "e2e/unsigned", "v1", workdir=tmp_path)
    image = registry.ref("e2e/unsigned", "v1")
    namespace = kubeclients.namespace(control_plane, "images", {SELECT_LABEL: "enforce"})
    with kubeclients.admin(control_plane) as api, pytest.raises(client.ApiException) as raised:
        client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment("unsigned", image))
    assert raised.value.status == 403, raised.value.body
    message = json.loads(raised.value.body)["message"]
    assert 'container "trainer"' in message
    assert f"image '{image}@sha256:" in message  # pinned by the mutation, then judged
    assert f"ImagePolicy '{signed_policy[0]}'" in message
    assert "no signature found" in message


def test_signed_deployment_is_admitted_and_its_pods_pinned(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    signed_policy: tuple[str, str],
    tmp_path: Path,
) -> None:
    compiled_condition(control_plane, signed_policy[0])
    digest = peers.push_image(registry, "e2e/signed", "v1", workdir=tmp_path)
    sign_v3(signers["alice"], f"{registry.host}/e2e/signed@{digest}")
    image = registry.ref("e2e/signed", "v1")
    namespace = kubeclients.namespace(control_plane, "images", {SELECT_LABEL: "enforce"})
    with kubeclients.admin(control_plane) as api:
        apps = client.AppsV1Api(api)
        created = apps.create_namespaced_deployment(namespace, deployment("signed", image))
        assert created.spec.template.spec.containers[0].image == f"{image}@{digest}"
        core = client.CoreV1Api(api)
        pods = eventually(
            lambda: core.list_namespaced_pod(namespace).items or None,
            "the controller-manager to create the pod",
            timeout=60,
        )
    assert [p.spec.containers[0].image for p in pods] == [f"{image}@{digest}"]
