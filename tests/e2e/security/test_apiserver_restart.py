"""The kube-apiserver restarts under a running ``muster run`` (its watches break mid-stream):
the operator recovers without a restart, a policy created after the restart is compiled and
enforced, and the policy from before still holds. A dedicated control plane, so the session's
is never stopped."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.kernel import crds, scopes
from muster.platform import controlplane
from tests import kubeclients, peers
from tests.integration.images.conftest import Signer, signers

pytestmark = pytest.mark.e2e

__all__ = ["signers"]

OWN_NAMESPACE = "muster-system"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    started = controlplane.start(tmp_path_factory.mktemp("restart-plane"), controllers=False)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def operator(
    plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    localoperator.install_crds(plane)
    started = localoperator.start(
        plane,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("restart-operator"),
        extra_args=(f"--insecure-registry={registry.host}",),
    )
    try:
        localoperator.register_webhooks(plane, started, own_namespace=OWN_NAMESPACE)
        yield started
    finally:
        started.stop()
        print(f"--- muster run (apiserver restart) log ---\n{started.log.read_text()[-3000:]}")


def create_policy(
    plane: controlplane.ControlPlane, host: str, repository: str, signer: Signer
) -> str:
    name = f"restart-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": {
            "images": [f"{host}/{repository}/**"],
            "authorities": [{"name": signer.name, "key": {"data": signer.pem}}],
        },
    }
    with kubeclients.admin(plane) as api:
        objects: Any = client.CustomObjectsApi(api)
        objects.create_cluster_custom_object(crds.GROUP, crds.VERSION, "imagepolicies", body)
    return name


def compiled(plane: controlplane.ControlPlane, name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with kubeclients.admin(plane) as api:
            objects: Any = client.CustomObjectsApi(api)
            obj = objects.get_cluster_custom_object(crds.GROUP, crds.VERSION, "imagepolicies", name)
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Compiled" and c.get("status") == "True" for c in conditions):
            return
        time.sleep(0.5)
    raise AssertionError(f"ImagePolicy {name} was never compiled")


def attempt(plane: controlplane.ControlPlane, namespace: str, image: str) -> tuple[int, str]:
    with kubeclients.admin(plane) as api:
        try:
            client.CoreV1Api(api).create_namespaced_pod(
                namespace, kubeclients.pod(f"r-{uuid.uuid4().hex[:8]}", image)
            )
        except client.ApiException as error:
            return error.status, str(json.loads(error.body or "{}").get("message", ""))
    return 201, ""


def must_be_denied(
    plane: controlplane.ControlPlane, namespace: str, image: str, policy: str
) -> None:
    """Denied by ``policy``: retried only while the operator is still catching up (the policy
    store refreshes from the API), never accepted as an allow."""
    deadline = time.monotonic() + 60
    while True:
        status, message = attempt(plane, namespace, image)
        assert status != 201, f"wrong allow of {image}"
        if status == 403 and policy in message and "no signature found" in message:
            return
        assert time.monotonic() < deadline, message
        time.sleep(0.5)


def test_apiserver_restart_mid_watch(
    plane: controlplane.ControlPlane,
    operator: localoperator.LocalOperator,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("restart-images")
    before = peers.push_image(registry, "restart1/app", "v1", workdir=workdir, env={"R": "1"})
    after = peers.push_image(registry, "restart2/app", "v1", workdir=workdir, env={"R": "2"})
    namespace = kubeclients.namespace(plane, "restart", {scopes.ENFORCE_LABEL: "true"})
    first = create_policy(plane, registry.host, "restart1", signers["alice"])
    compiled(plane, first)
    must_be_denied(plane, namespace, f"{registry.host}/restart1/app@{before}", first)
    controlplane.restart_apiserver(plane, down_for=2)
    # A policy created after the restart reaches the operator through its recovered watch.
    second = create_policy(plane, registry.host, "restart2", signers["alice"])
    compiled(plane, second)
    must_be_denied(plane, namespace, f"{registry.host}/restart2/app@{after}", second)
    must_be_denied(plane, namespace, f"{registry.host}/restart1/app@{before}", first)
    with kubeclients.admin(plane) as api:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    assert pods == []
    out = Path(tmp_path_factory.getbasetemp()) / "reliability-apiserver.json"
    out.write_text(json.dumps({"faults": {"apiserver-restart": 1}, "wrong_allows": 0}))
    print("reliability: apiserver restart injected=1 wrong_allows=0")
