"""What a namespace costs: every gate reads its labels through one index per process, so a
namespace never seen before costs one API read however many gates judge the pod, and the
next pod in it none.

The operator's own gates (built as ``muster run`` builds them) judge a pod against the real
apiserver, where an ImagePolicy (with vulnerability rules), a GPUStackPolicy and a ModelPolicy
all select its namespace; the process's API client is wrapped to count what it reads.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from muster.admission import server
from muster.app import localoperator, runtime
from muster.drift.rules import passes as drift
from muster.gpu.rules import policies as gpupolicies
from muster.images import gate as imagegate
from muster.kernel import findings, gates, jsonpatches, scopes, selectors
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, kubeapi, processes, registries
from muster.platform import namespaces as platformnamespaces
from tests import kubeclients
from tests.apiwaits import served

pytestmark = pytest.mark.integration

SUITE = "muster.dev/integration-namespace-reads"
# A registry nothing listens on: every registry read fails at once, without leaving loopback.
REGISTRY = f"127.0.0.1:{processes.free_port()}"
IMAGE = f"{REGISTRY}/team/trainer@sha256:" + "ab" * 32
OperatorServices = runtime.Services[runtime.OperatorSettings]
VERIFIER = "registry.example/muster/muster@sha256:" + "5e" * 32


def count_reads(kube: kubeapi.KubeApi) -> collections.Counter[str]:
    """Count the GETs ``kube`` sends, by path; each still goes to the apiserver."""
    reads: collections.Counter[str] = collections.Counter()
    send = kube.request

    async def counted(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "GET":
            reads[path] += 1
        return await send(method, path, **kwargs)

    setattr(kube, "request", counted)  # noqa: B010  # the instance's, not the class's
    return reads


@pytest.fixture
async def services(control_plane: controlplane.ControlPlane) -> AsyncIterator[OperatorServices]:
    localoperator.install_crds(control_plane)
    settings = runtime.OperatorSettings(
        webhook=server.WebhookSettings(),
        kubeconfig=str(control_plane.kubeconfig),
        registry=registries.RegistrySettings(insecure_registries=frozenset({REGISTRY})),
        model_verifier_image=VERIFIER,
        # Like a second installation judging only its own namespaces.
        namespace_selector=selectors.LabelSelector.model_validate({"matchLabels": {SUITE: "yes"}}),
    )
    found = runtime.create_services(settings)

    try:
        plurals = ("models", "modelpolicies", "imagepolicies", "gpustackpolicies")
        await served(found.kube, *plurals, what="Muster's custom resources served")
        yield found
    finally:
        await imagegate.area_for(found).verifier.close()
        await found.close()


@contextlib.contextmanager
def policies_for(plane: controlplane.ControlPlane, namespace: str) -> Iterator[None]:
    """An ImagePolicy with vulnerability rules, a GPUStackPolicy and a ModelPolicy, each
    selecting ``namespace`` alone."""
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    gpu = copy.deepcopy(gpupolicies.DEFAULT_POLICY)
    gpu["namespaceSelector"] = selector
    image = {
        "images": [f"{REGISTRY}/**"],
        "namespaceSelector": selector,
        "authorities": [{"name": "team", "key": {"data": PUBLIC_KEY}}],
        "vulnerabilities": {"maxSeverity": "MEDIUM", "whenUnscanned": "deny"},
    }
    model = {"namespaceSelector": selector}
    with (
        kubeclients.muster_object(plane, "imagepolicies", "ImagePolicy", namespace, image),
        kubeclients.muster_object(plane, "gpustackpolicies", "GPUStackPolicy", namespace, gpu),
        kubeclients.muster_object(plane, "modelpolicies", "ModelPolicy", namespace, model),
    ):
        yield


# A real key: nothing is ever signed with it (the registry is unreachable).
PUBLIC_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def gpu_pod(name: str, namespace: str) -> dict[str, Any]:
    pod: dict[str, Any] = kubeclients.pod(name, IMAGE)
    pod["metadata"]["namespace"] = namespace
    pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    # A Model no one approved, for the ModelPolicy to judge.
    pod["metadata"]["annotations"] = {
        modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": "nobody-approved"})
    }
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/m"}]
    return pod


async def admit(pipeline: Any, pod: dict[str, Any]) -> set[str]:
    """Both webhooks' requests for ``pod``, as the apiserver sends them; the reasons the
    validating one gives."""
    mutated = await pipeline.review(
        drift.pod_review(pod), gates.Phase.MUTATE, findings.Mode.ENFORCE
    )
    patch = mutated["response"].get("patch")
    if patch:
        pod = jsonpatches.apply(pod, json.loads(base64.b64decode(patch)))
    validated = await pipeline.review(
        drift.pod_review(pod), gates.Phase.VALIDATE, findings.Mode.ENFORCE
    )
    message = str((validated["response"].get("status") or {}).get("message", ""))
    return set(re.findall(r"\[(\w+)\]$", message, re.MULTILINE))


async def test_a_new_namespace_costs_one_read_for_every_gate_and_the_next_pod_none(
    control_plane: controlplane.ControlPlane, services: OperatorServices
) -> None:
    run = uuid.uuid4().hex[:6]
    labels = {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true", SUITE: "yes"}
    namespace = kubeclients.namespace(control_plane, f"reads-{run}", labels)
    path = f"/api/v1/namespaces/{namespace}"
    with policies_for(control_plane, namespace):
        pipeline = runtime.build_pipeline(services)
        reads = count_reads(services.kube)
        reasons = await admit(pipeline, gpu_pod("first", namespace))
        # Every gate found its policy for this namespace and had its say...
        assert {
            "SignatureLookupFailed",  # images: the registry is unreachable
            "ImageNotScanned",  # vulnerabilities
            "ImageConfigUnreadable",  # GPU stack: its CUDA requirement cannot be read
            "ModelNotApproved",  # models
        } <= reasons, reasons
        # ... from one read of its labels, in both phases together.
        assert reads[path] == 1, dict(reads)
        reads.clear()
        assert await admit(pipeline, gpu_pod("second", namespace)) == reasons
        assert reads[path] == 0, dict(reads)


async def test_gates_asking_at_once_share_one_read_and_its_failure(
    control_plane: controlplane.ControlPlane, services: OperatorServices
) -> None:
    index = platformnamespaces.index_for(services)
    assert platformnamespaces.index_for(services) is index  # one per process
    assert imagegate.area_for(services).namespaces is index
    reads = count_reads(services.kube)
    namespace = kubeclients.namespace(control_plane, "reads", {"team": "a"})
    found = await asyncio.gather(*(index.labels(namespace) for _ in range(5)))
    assert all(labels["team"] == "a" for labels in found)
    assert reads[f"/api/v1/namespaces/{namespace}"] == 1

    # A namespace that cannot be read fails every gate that asked, and is kept by no one.
    missing = f"reads-missing-{uuid.uuid4().hex[:6]}"
    failed = await asyncio.gather(
        *(index.labels(missing) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(error, kubeapi.ApiError) and error.status == 404 for error in failed)
    assert reads[f"/api/v1/namespaces/{missing}"] == 1
    assert index.last_known(missing) is None
    with pytest.raises(kubeapi.ApiError):
        await index.labels(missing)
    assert reads[f"/api/v1/namespaces/{missing}"] == 2

    # A gate cut off by its deadline does not cancel the read the others wait for.
    other = kubeclients.namespace(control_plane, "reads", {"team": "b"})
    impatient = asyncio.ensure_future(index.labels(other))
    patient = asyncio.ensure_future(index.labels(other))
    await asyncio.sleep(0)
    impatient.cancel()
    assert (await patient)["team"] == "b"
    assert reads[f"/api/v1/namespaces/{other}"] == 1


async def test_what_the_watch_says_counts_and_nothing_outlives_the_ttl(
    control_plane: controlplane.ControlPlane, services: OperatorServices
) -> None:
    index = platformnamespaces.index_for(services)
    reads = count_reads(services.kube)
    namespace = kubeclients.namespace(control_plane, "reads", {"team": "a"})
    path = f"/api/v1/namespaces/{namespace}"
    index.update(namespace, {"team": "watched"})
    assert (await index.labels(namespace))["team"] == "watched"
    assert reads[path] == 0
    # Labels seen longer ago than the TTL are read again (a replica's paused watch is no
    # excuse), and a deleted namespace is forgotten.
    index.ttl = 0.0
    assert (await index.labels(namespace))["team"] == "a"
    assert reads[path] == 1
    index.update(namespace, None)
    assert index.last_known(namespace) is None


async def test_a_namespace_whose_labels_cannot_be_read_is_denied_not_guessed(
    control_plane: controlplane.ControlPlane, services: OperatorServices
) -> None:
    # The pod names a namespace the apiserver does not know: its labels cannot be read, so the
    # image and vulnerability gates cannot tell which of their policies apply, and fail closed.
    missing = f"reads-gone-{uuid.uuid4().hex[:6]}"
    with policies_for(control_plane, missing):
        pipeline = runtime.build_pipeline(services)
        validated = await pipeline.review(
            drift.pod_review(gpu_pod("lost", missing)), gates.Phase.VALIDATE, findings.Mode.ENFORCE
        )
    response = validated["response"]
    message = str((response.get("status") or {}).get("message", ""))
    assert response["allowed"] is False
    unavailable = [line for line in message.splitlines() if line.endswith("[NamespaceUnavailable]")]
    assert len(unavailable) == 2, message  # the image gate's and the vulnerability gate's
    assert all(f"namespace {missing}" in line for line in unavailable)
    assert all("cannot read its labels to select ImagePolicies" in line for line in unavailable)
