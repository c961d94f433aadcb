"""The mutating webhooks' match condition, evaluated by the real kube-apiserver's CEL.

The apiserver skips the mutating call when ``webhookconfigs.MAY_MUTATE`` is false, so a pod
that needs a mutation must never make it false. The oracle here is the apiserver itself: a
MutatingWebhookConfiguration with that very condition points at a port where nothing listens,
with ``failurePolicy: Fail``. A pod for which the condition holds is refused ("failed calling
webhook"); one for which it does not is admitted (created with ``dryRun``, so nothing stays).
One case per kind of mutation a gate's MUTATE phase can produce: pinning (image gate), GPU
steering (GPU gate), the model verifier and model annotations (model gate), the dataset
verifier and dataset annotations (dataset gate).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from muster.app import webhookconfigs
from muster.datasets.rules import registry as datasetregistry
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, kubesetup, processes
from tests import kubeclients

pytestmark = pytest.mark.integration

PINNED = "registry.example/team/trainer@sha256:" + "ab" * 32
TAGGED = "registry.example/team/trainer:v1"
LABEL = "muster-tests.dev/may-mutate"


def _pod(**spec: Any) -> dict[str, Any]:
    metadata = spec.pop("metadata", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p-{uuid.uuid4().hex[:6]}", **metadata},
        "spec": {"containers": [{"name": "trainer", "image": PINNED}], **spec},
    }


def _container(**fields: Any) -> dict[str, Any]:
    return {"name": "trainer", "image": PINNED, **fields}


@pytest.fixture(scope="module")
def probe(control_plane: controlplane.ControlPlane) -> Iterator[tuple[client.ApiClient, str]]:
    """A namespace whose pods meet only the probe webhook."""
    marker = uuid.uuid4().hex[:8]
    namespace = kubeclients.namespace(control_plane, "may-mutate", {LABEL: marker})
    manifest = copy.deepcopy(webhookconfigs.mutating("https://unused", "", own_namespace="x"))
    hook = manifest["webhooks"][0]
    name = f"may-mutate-{marker}.muster-tests.dev"
    manifest["metadata"]["name"] = name
    hook["clientConfig"] = {"url": f"https://127.0.0.1:{processes.free_port()}/mutate"}
    hook["namespaceSelector"] = {"matchLabels": {LABEL: marker}}
    hook["failurePolicy"] = "Fail"
    hook["timeoutSeconds"] = 2
    assert hook["matchConditions"] == [
        {"name": "may-mutate", "expression": webhookconfigs.MAY_MUTATE}
    ]
    manifest["webhooks"] = [hook]
    api = kubeclients.admin(control_plane)
    admission: Any = client.AdmissionregistrationV1Api(api)
    kubesetup.apply_webhook_configuration(api, manifest)
    try:
        # The apiserver picks configurations up through an informer: wait until it calls.
        deadline = time.monotonic() + 30
        while not _called(api, namespace, _pod(containers=[_container(image=TAGGED)])):
            assert time.monotonic() < deadline, "the probe webhook never took effect"
            time.sleep(0.2)
        yield api, namespace
    finally:
        admission.delete_mutating_webhook_configuration(name)
        api.close()


def _called(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> bool:
    """Whether the apiserver called the (unreachable) mutating webhook for this pod."""
    try:
        client.CoreV1Api(api).create_namespaced_pod(namespace, body, dry_run="All")
    except client.ApiException as error:
        if "failed calling webhook" in str(error.body):
            return True
        raise AssertionError(f"refused for another reason: {error.body}") from None
    return False


NVIDIA_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "Exists"}]}
            ]
        }
    }
}

NEEDS_MUTATION = {
    # image gate: pinning
    "tagged container": _pod(containers=[_container(image=TAGGED)]),
    "tagged init container": _pod(initContainers=[_container(name="init", image=TAGGED)]),
    "image with no tag or digest": _pod(containers=[_container(image="busybox")]),
    "image volume (pinning, models)": _pod(
        volumes=[{"name": "weights", "image": {"reference": PINNED}}]
    ),
    # GPU gate: affinity to compliant nodes
    "GPU limit": _pod(containers=[_container(resources={"limits": {"nvidia.com/gpu": "1"}})]),
    "MIG limit": _pod(
        containers=[_container(resources={"limits": {"nvidia.com/mig-1g.10gb": "1"}})]
    ),
    "GPU limit on an init container": _pod(
        initContainers=[_container(name="init", resources={"limits": {"nvidia.com/gpu": "1"}})]
    ),
    "NVIDIA node selector": _pod(nodeSelector={"nvidia.com/gpu.present": "true"}),
    "node affinity": _pod(affinity=NVIDIA_AFFINITY),
    # model gate: verifier init containers, model annotation and label
    "STORAGE_URI": _pod(
        containers=[_container(env=[{"name": "STORAGE_URI", "value": "oci://r.example/m:1"}])]
    ),
    "storage-uri annotation": _pod(
        metadata={"annotations": {"serving.kserve.io/storage-uri": "oci://r.example/m:1"}}
    ),
    "storageUri annotation": _pod(
        metadata={"annotations": {"example.com/storageUri": "oci://r.example/m:1"}}
    ),
    "KServe's internal storage-initializer-sourceuri annotation": _pod(
        metadata={
            "annotations": {
                "internal.serving.kserve.io/storage-initializer-sourceuri": "hf://org/m@v1"
            }
        }
    ),
    "KServe storage-initializer (hf:// in its args)": _pod(
        initContainers=[
            _container(name="storage-initializer", args=["hf://org/m@v1", "/mnt/models"])
        ]
    ),
    "declared model volumes": _pod(
        metadata={"annotations": {modelregistry.MODEL_VOLUMES_ANNOTATION: '{"data": "m"}'}},
        volumes=[{"name": "data", "emptyDir": {}}],
    ),
    # dataset gate: verifier init containers, dataset annotation and label
    "declared dataset volumes": _pod(
        metadata={"annotations": {datasetregistry.DATASET_VOLUMES_ANNOTATION: '{"data": "d"}'}},
        volumes=[{"name": "data", "nfs": {"server": "nfs.example", "path": "/d"}}],
    ),
    "persistent volume claim": _pod(
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "weights"}}]
    ),
    # model and dataset gates: a TrainJob's trainer pod re-measures its initializers' downloads
    "JobSet pod (a TrainJob's trainer)": _pod(
        metadata={"labels": {"jobset.sigs.k8s.io/jobset-name": "tune"}},
        volumes=[{"name": "initializer", "emptyDir": {}}],
    ),
}


@pytest.mark.parametrize("case", list(NEEDS_MUTATION))
def test_every_kind_of_mutation_is_sent_to_muster(
    probe: tuple[client.ApiClient, str], case: str
) -> None:
    api, namespace = probe
    assert _called(api, namespace, copy.deepcopy(NEEDS_MUTATION[case]))


def test_device_claims_are_sent_to_muster(probe: tuple[client.ApiClient, str]) -> None:
    api, namespace = probe
    body = _pod(resourceClaims=[{"name": "gpu", "resourceClaimName": "a-gpu"}])
    body["spec"]["containers"][0]["resources"] = {"claims": [{"name": "gpu"}]}
    assert _called(api, namespace, body)


def test_a_pod_that_needs_nothing_is_not_sent(probe: tuple[client.ApiClient, str]) -> None:
    """Pinned images everywhere, CPU resources, ordinary volumes, env, selectors, annotations."""
    api, namespace = probe
    body = _pod(
        metadata={"labels": {"app": "t"}, "annotations": {"team": "ml", "storage": "fast"}},
        initContainers=[_container(name="init", env=[{"name": "MODE", "value": "x"}])],
        containers=[
            _container(resources={"limits": {"cpu": "1", "memory": "1Gi"}}),
            _container(name="sidecar", image="registry.example/side:v2@sha256:" + "cd" * 32),
        ],
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "c"}},
        ],
        nodeSelector={"kubernetes.io/arch": "amd64"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    assert not _called(api, namespace, body)


def test_workloads_are_always_sent(probe: tuple[client.ApiClient, str]) -> None:
    """Pod templates are not looked into: every Deployment reaches Muster's mutation."""
    api, namespace = probe
    labels = {"app": "d"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"d-{uuid.uuid4().hex[:6]}"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [_container()]},
            },
        },
    }
    with pytest.raises(client.ApiException) as refused:
        client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment, dry_run="All")
    assert "failed calling webhook" in str(refused.value.body)
