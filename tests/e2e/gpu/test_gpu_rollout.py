"""The GPU gate on a cluster that did not ask for it, and one that scales GPU nodes from zero.

Through the real apiserver and a real ``muster run``; nodes carry real GPU Feature Discovery
label sets, the image the real ``NVIDIA_REQUIRE_CUDA`` of NVIDIA's CUDA 12.4 base image. Nodes
are created *after* the pods, as a cluster autoscaler or Karpenter adds them for pending pods,
and the pods are bound the way the scheduler binds them (``pods/binding``).

The image is signed and an ImagePolicy covering it wants that signature, as on a cluster that
adopted Muster's image gate. This module's policies are its own and removed at the end; when it
starts no other GPUStackPolicy exists (the other GPU modules remove theirs), which the first test
checks.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from muster.app import localoperator
from muster.gpu.rules import stack as gpustack
from muster.kernel import crds
from muster.platform import controlplane
from tests import kubeclients, paths, peers
from tests.e2e.gpu.conftest import NAMESPACE_LABELS, SUITE_LABEL, eventually, warnings_of
from tests.integration.images.conftest import Signer, sign_v3
from tests.integration.images.conftest import signers as signers  # the fixture

pytestmark = pytest.mark.e2e

GPU = paths.FIXTURES / "gpu"
RUN = uuid.uuid4().hex[:5]
SELECT = "muster.dev/gpu-rollout-e2e"  # which of this module's policies selects a namespace
COVERED = {"muster.dev/gpu-rollout-images": RUN}  # the namespaces this module's ImagePolicy covers
# The seed policy's toolkit rules need the node agent, which these nodes do not run; R450 is
# end of life here so that a real A100 (driver 450.80.02) is non-compliant and an H100
# (550.54.15) compliant.
ENFORCE_SPEC: dict[str, Any] = {
    "namespaceSelector": {"matchLabels": {SELECT: f"enforce-{RUN}"}},
    "endOfLifeBranches": [{"branch": 450, "source": "test: R450 reached end of life"}],
}
WARN_SPEC: dict[str, Any] = {
    "mode": "warn",
    "namespaceSelector": {"matchLabels": {SELECT: f"warn-{RUN}"}},
    "endOfLifeBranches": [{"branch": 450, "source": "test: R450 reached end of life"}],
}


def _h100_labels() -> dict[str, str]:
    """The complete real label map of an H100 node (GPU Operator, driver 550.54.15)."""
    raw = json.loads(
        (GPU / "gfd-labels" / "gpu-operator-H100-mig-single-node-labels.json").read_text()
    )
    return {k: v for k, v in raw.items() if k != "kubernetes.io/hostname"}


def _a100_labels() -> dict[str, str]:
    """GFD labels of an A100 on a DGX, driver 450.80.02 (``gpu.machine`` left out: the docs
    print a value no apiserver accepts)."""
    sets = yaml.safe_load((GPU / "gfd-labels" / "label-sets.yaml").read_text())["label_sets"]
    labels = dict(next(s for s in sets if s["id"].endswith("#L199-L212"))["labels"])
    labels.pop("nvidia.com/gpu.machine")
    return labels


def _image_env(tag: str) -> dict[str, str]:
    entries = yaml.safe_load((GPU / "cuda-images" / "cuda-image-env.yaml").read_text())["entries"]
    entry = next(e for e in entries if e["tag"] == tag and e["docker_arch"] == "amd64")
    keys = ("NVARCH", "CUDA_VERSION", "NV_CUDA_CUDART_VERSION", "NVIDIA_REQUIRE_CUDA")
    return {key: str(entry[key]) for key in keys if key in entry}


def _policy(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "GPUStackPolicy",
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def _policies(plane: controlplane.ControlPlane) -> list[str]:
    with kubeclients.admin(plane) as api:
        listed = client.CustomObjectsApi(api).list_cluster_custom_object(
            crds.GROUP, crds.VERSION, "gpustackpolicies"
        )
    return [item["metadata"]["name"] for item in listed["items"]]


@pytest.fixture(scope="module")
def image(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    gpu_operator: localoperator.LocalOperator,
    signers: dict[str, Signer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The CUDA image, signed, and an ImagePolicy covering it that wants that signature: the
    cluster of a team that adopted Muster's image gate and has not asked for the GPU gate."""
    del gpu_operator
    workdir = tmp_path_factory.mktemp("gpu-rollout")
    tag = "12.4.1-base-ubuntu22.04"
    repository = f"gpu-rollout-{RUN}/cuda"
    digest = peers.push_image(registry, repository, tag, env=_image_env(tag), workdir=workdir)
    ref = f"{registry.host}/{repository}@{digest}"
    sign_v3(signers["alice"], ref)
    spec = {
        "images": [f"{registry.host}/gpu-rollout-{RUN}/**"],
        "namespaceSelector": {"matchLabels": COVERED},
        "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
    }
    with kubeclients.muster_object(
        control_plane, "imagepolicies", "ImagePolicy", f"gpu-rollout-{RUN}", spec
    ):
        yield ref


class Cluster:
    """Nodes and pods of one test, removed at its end (the control plane outlives it)."""

    def __init__(self, plane: controlplane.ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace
        self.nodes: list[str] = []

    def pod(self, name: str, image: str) -> tuple[Any, list[str]]:
        """A GPU pod created as the admin: the pod and the apiserver's Warning headers."""
        body = {
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {
                        "name": "trainer",
                        "image": image,
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ]
            },
        }
        with kubeclients.admin(self.plane) as api:
            core: Any = client.CoreV1Api(api)
            created, _, headers = core.create_namespaced_pod_with_http_info(self.namespace, body)
        return created, warnings_of(headers)

    def node(self, name: str, labels: Mapping[str, str]) -> dict[str, str]:
        """A node joining the cluster: the labels it has when it joins (no Muster label)."""
        with kubeclients.admin(self.plane) as api:
            created = client.CoreV1Api(api).create_node(
                {"metadata": {"name": name, "labels": {**labels, SUITE_LABEL: "gpu"}}}
            )
        self.nodes.append(name)
        return dict(created.metadata.labels or {})

    def bind(self, pod: str, node: str) -> list[str]:
        """Bind as the scheduler does; the Warning headers. Raises on a refusal."""
        with kubeclients.admin(self.plane) as api:
            core: Any = client.CoreV1Api(api)
            response = core.create_namespaced_pod_binding(
                pod,
                self.namespace,
                {"metadata": {"name": pod}, "target": {"kind": "Node", "name": node}},
                _preload_content=False,
            )
            bound = core.read_namespaced_pod(pod, self.namespace).spec.node_name
        assert bound == node
        return warnings_of(dict(response.headers))

    def refused(self, pod: str, node: str) -> str:
        with pytest.raises(client.ApiException) as raised:
            self.bind(pod, node)
        assert raised.value.status == 403, raised.value.body
        message: str = json.loads(raised.value.body)["message"]
        return message

    def close(self) -> None:
        with kubeclients.admin(self.plane) as api:
            for name in self.nodes:
                client.CoreV1Api(api).delete_node(name)


@contextlib.contextmanager
def _cluster(plane: controlplane.ControlPlane, select: str | None) -> Iterator[Cluster]:
    labels = {**NAMESPACE_LABELS, **COVERED}
    if select is not None:
        labels[SELECT] = select
    cluster = Cluster(plane, kubeclients.namespace(plane, "gpu-rollout", labels))
    try:
        yield cluster
    finally:
        cluster.close()


def _terms(pod: Any) -> list[list[tuple[str, str, list[str] | None]]]:
    required = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    return [
        [(e.key, e.operator, e.values) for e in term.match_expressions]
        for term in required.node_selector_terms
    ]


def _satisfies(
    terms: list[list[tuple[str, str, list[str] | None]]], labels: dict[str, str]
) -> bool:
    """The scheduler's reading of required node affinity (terms ORed, expressions ANDed)."""

    def holds(key: str, operator: str, values: list[str] | None) -> bool:
        if operator == "NotIn":
            return labels.get(key) not in (values or [])
        if operator == "DoesNotExist":
            return key not in labels
        if operator == "Gt":
            return key in labels and int(labels[key]) > int((values or ["0"])[0])
        raise AssertionError(f"unexpected operator {operator}")

    return any(all(holds(*expression) for expression in term) for term in terms)


def _muster_labels(plane: controlplane.ControlPlane, node: str) -> dict[str, str]:
    with kubeclients.admin(plane) as api:
        labels = client.CoreV1Api(api).read_node(node).metadata.labels or {}
    return {k: v for k, v in labels.items() if k.startswith("muster.dev/gpu")}


def test_without_a_gpu_stack_policy_gpu_pods_schedule_as_before_muster(
    control_plane: controlplane.ControlPlane, registry: peers.Registry, image: str, tmp_path: Path
) -> None:
    """The chart at its defaults installs no GPUStackPolicy: an H100 on driver 550, which the
    seed policy calls end of life, takes GPU pods exactly as it would without Muster."""
    assert _policies(control_plane) == []
    with _cluster(control_plane, None) as cluster:
        before, warnings = cluster.pod("before", image)  # no GPU node exists yet
        assert before.spec.affinity is None
        assert [c.image for c in before.spec.containers] == [image]
        assert not [w for w in warnings if "GPU" in w or "CUDA" in w], warnings
        node = f"h100-as-before-{RUN}"
        cluster.node(node, _h100_labels())
        assert cluster.bind("before", node) == []
        after, warnings = cluster.pod("after", image)  # the node exists now
        assert after.spec.affinity is None and warnings == []
        assert cluster.bind("after", node) == []
        # An A100 on an end-of-life driver too: no policy, no judgement.
        old = f"a100-as-before-{RUN}"
        cluster.node(old, _a100_labels())
        cluster.pod("old", image)
        assert cluster.bind("old", old) == []
        assert _muster_labels(control_plane, node) == {}
        assert _muster_labels(control_plane, old) == {}
        # The image gate is in force all along: the same image unsigned is refused.
        tag = "12.4.1-base-ubuntu22.04"
        repository = f"gpu-rollout-{RUN}/unsigned"
        env = _image_env(tag)
        digest = peers.push_image(registry, repository, tag, env=env, workdir=tmp_path)
        with pytest.raises(client.ApiException) as raised:
            cluster.pod("unsigned", f"{registry.host}/{repository}@{digest}")
        assert raised.value.status == 403, raised.value.body
        assert "no signature found" in json.loads(raised.value.body)["message"]


@pytest.fixture(scope="module")
def policies(control_plane: controlplane.ControlPlane, image: str) -> Iterator[str]:
    names = {f"rollout-enforce-{RUN}": ENFORCE_SPEC, f"rollout-warn-{RUN}": WARN_SPEC}
    with kubeclients.admin(control_plane) as api:
        custom: Any = client.CustomObjectsApi(api)
        for name, spec in names.items():
            custom.create_cluster_custom_object(
                crds.GROUP, crds.VERSION, "gpustackpolicies", _policy(name, spec)
            )
    yield image
    with kubeclients.admin(control_plane) as api:
        for name in names:
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                crds.GROUP, crds.VERSION, "gpustackpolicies", name
            )


def test_a_pod_waiting_for_a_new_node_is_steered_and_judged_at_binding(
    control_plane: controlplane.ControlPlane, policies: str
) -> None:
    with _cluster(control_plane, f"enforce-{RUN}") as cluster:
        pod, warnings = cluster.pod("waits", policies)  # admitted: a node may still come
        assert any("stays Pending until a node that can run it joins" in w for w in warnings), (
            warnings
        )
        terms = _terms(pod)
        avoid = ["non-compliant", "unknown"]
        assert terms == [
            [
                (gpustack.STATE_LABEL, "NotIn", avoid),
                (gpustack.CUDA_CAPABILITY_LABEL, "Gt", ["12039"]),
            ],
            [
                (gpustack.STATE_LABEL, "NotIn", avoid),
                (gpustack.CUDA_CAPABILITY_LABEL, "DoesNotExist", None),
            ],
        ]
        # A node the autoscaler adds carries no Muster label: the affinity lets the pod on it
        # (a required `In [compliant]` could never be met by a node template).
        node = f"h100-new-{RUN}"
        joined = cluster.node(node, _h100_labels())
        assert gpustack.STATE_LABEL not in joined
        assert _satisfies(terms, joined)
        # Bound at once, before the controller labelled it: judged as the binding arrives.
        assert cluster.bind("waits", node) == []

        cluster.pod("second", policies)
        old = f"a100-new-{RUN}"
        joined = cluster.node(old, _a100_labels())
        assert _satisfies(terms, joined)  # unlabelled: only the binding can tell
        message = cluster.refused("second", old)
        assert f"node {old} is non-compliant" in message and "R450" in message
        # Once judged, the label steers the scheduler away from it too.
        labels = eventually(lambda: _muster_labels(control_plane, old), "the A100 labelled")
        assert labels[gpustack.STATE_LABEL] == "non-compliant"
        assert not _satisfies(terms, {**joined, **labels})

        # A node with no GPU Feature Discovery labels yet cannot be judged: unknownNodes
        # defaults to deny.
        blank = f"blank-{RUN}"
        cluster.node(blank, {})
        message = cluster.refused("second", blank)
        assert f"node {blank} has no GPU stack Muster can judge" in message


def test_warn_mode_leaves_scheduling_alone(
    control_plane: controlplane.ControlPlane, policies: str
) -> None:
    with _cluster(control_plane, f"warn-{RUN}") as cluster:
        old = f"a100-warn-{RUN}"
        cluster.node(old, _a100_labels())
        eventually(lambda: _muster_labels(control_plane, old), "the A100 labelled")
        pod, warnings = cluster.pod("warned", policies)
        assert pod.spec.affinity is None  # warn mode never writes affinity
        assert any("GPUStackPolicy" in w or "non-compliant" in w for w in warnings), warnings
        warnings = cluster.bind("warned", old)  # not refused: a warning
        assert any(f"node {old} is non-compliant" in w for w in warnings), warnings
