"""A GPU pod's way onto a node, on the real apiserver with a real ``muster run``.

Nodes carry real GPU Feature Discovery label sets; images in the real registry carry the real
``NVIDIA_REQUIRE_CUDA`` strings of NVIDIA's CUDA images. The controller labels the nodes and
posts Events; admission writes node affinity that steers away from nodes judged bad, warns about
what no node known now could run, and the apiserver's admission chain refuses a Binding to a
non-compliant node or one whose driver is too old.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from muster.app import localoperator
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.kernel import crds
from muster.platform import controlplane
from tests import gpuroots, kubeclients, paths, peers, workloadkinds
from tests.e2e.gpu.conftest import (
    NAMESPACE_LABELS,
    SUITE_LABEL,
    eventually,
    publish_node,
    warnings_of,
)

pytestmark = pytest.mark.e2e

GPU = paths.FIXTURES / "gpu"
RUN = uuid.uuid4().hex[:5]


def _image_env(tag: str) -> dict[str, str]:
    entries = yaml.safe_load((GPU / "cuda-images" / "cuda-image-env.yaml").read_text())["entries"]
    entry = next(e for e in entries if e["tag"] == tag and e["docker_arch"] == "amd64")
    keys = ("NVARCH", "CUDA_VERSION", "NV_CUDA_CUDART_VERSION", "NVIDIA_REQUIRE_CUDA")
    return {key: str(entry[key]) for key in keys if key in entry}


def _h100_labels() -> dict[str, str]:
    """The complete real label map of an H100 node (GPU Operator, driver 550.54.15)."""
    raw = json.loads(
        (GPU / "gfd-labels" / "gpu-operator-H100-mig-single-node-labels.json").read_text()
    )
    return {k: v for k, v in raw.items() if k != "kubernetes.io/hostname"}


def _a100_labels() -> dict[str, str]:
    """GFD labels of an A100 on a DGX, driver 450.80.02 (old ``cuda.driver.*`` keys only).
    The docs print ``gpu.machine: NVIDIA DGX``, which no apiserver accepts as a label value
    (GFD itself writes ``NVIDIA-DGX``): that one label is left out."""
    sets = yaml.safe_load((GPU / "gfd-labels" / "label-sets.yaml").read_text())["label_sets"]
    labels = dict(next(s for s in sets if s["id"].endswith("#L199-L212"))["labels"])
    labels.pop("nvidia.com/gpu.machine")
    return labels


# Nodes are judged against every GPUStackPolicy in the cluster. The e2e nodes have no node
# agent, so this policy leaves out the toolkit rules (they need an attestation) and adds the
# R450/R470 branches to the seed's end-of-life list: a real old node is then non-compliant.
POLICY: dict[str, Any] = copy.deepcopy(gpupolicies.DEFAULT_POLICY)
POLICY.pop("minimumToolkitVersion")
POLICY.pop("deniedToolkitVersions")
POLICY["knownGoodModuleDigests"] = [gpuroots.module_digest()]
POLICY["endOfLifeBranches"] = [
    {"branch": 450, "source": "test: R450 reached end of life"},
    {"branch": 470, "source": "test: R470 reached end of life"},
]


@pytest.fixture(scope="module")
def cluster(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    gpu_operator: localoperator.LocalOperator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    del gpu_operator
    workdir = tmp_path_factory.mktemp("gpu-images")
    images = {}
    for key, tag, extra in (
        ("cuda124", "12.4.1-base-ubuntu22.04", {}),
        ("cuda128", "12.8.1-base-ubuntu24.04", {}),
        ("preload", "12.4.1-base-ubuntu22.04", {"LD_PRELOAD": "/tmp/evil.so"}),
    ):
        env = {**_image_env(tag), **extra}
        digest = peers.push_image(registry, f"gpu/{key}", tag, env=env, workdir=workdir)
        images[key] = f"{registry.host}/gpu/{key}@{digest}"
    with kubeclients.admin(control_plane) as api:
        custom: Any = client.CustomObjectsApi(api)
        body = {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": "GPUStackPolicy",
            "metadata": {"name": "gpu-e2e"},
            "spec": POLICY,
        }
        try:
            custom.create_cluster_custom_object(crds.GROUP, crds.VERSION, "gpustackpolicies", body)
        except client.ApiException as error:
            if error.status != 409:
                raise
        core: Any = client.CoreV1Api(api)
        for name, labels in (
            (f"h100-{RUN}", _h100_labels()),
            (f"a100-{RUN}", _a100_labels()),
            (f"attested-{RUN}", _h100_labels()),
        ):
            core.create_node({"metadata": {"name": name, "labels": {**labels, SUITE_LABEL: "gpu"}}})
    yield images
    with kubeclients.admin(control_plane) as api:  # the control plane outlives this module
        core = client.CoreV1Api(api)
        for name in (f"h100-{RUN}", f"a100-{RUN}", f"attested-{RUN}"):
            core.delete_node(name)
        client.CustomObjectsApi(api).delete_cluster_custom_object(
            crds.GROUP, crds.VERSION, "gpustackpolicies", "gpu-e2e"
        )


def _node_labels(plane: controlplane.ControlPlane, name: str) -> dict[str, str]:
    with kubeclients.admin(plane) as api:
        node = client.CoreV1Api(api).read_node(name)
    return dict(node.metadata.labels or {})


def _labelled(plane: controlplane.ControlPlane, name: str) -> Callable[[], dict[str, str] | None]:
    def check() -> dict[str, str] | None:
        labels = _node_labels(plane, name)
        return labels if gpustack.STATE_LABEL in labels else None

    return check


def _gpu_pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "trainer",
                    "image": image,
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
            **spec,
        },
    }


def _affinity(pod: Any) -> list[tuple[str, str, list[str]]]:
    """The first node selector term's expressions (the one that asks for enough CUDA)."""
    required = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    first, unlabelled = required.node_selector_terms
    assert [(e.key, e.operator) for e in unlabelled.match_expressions][-1] == (
        gpustack.CUDA_CAPABILITY_LABEL,
        "DoesNotExist",
    )
    return [(e.key, e.operator, e.values) for e in first.match_expressions]


def _namespace(plane: controlplane.ControlPlane) -> str:
    return kubeclients.namespace(plane, "gpu", NAMESPACE_LABELS)


def _denial(plane: controlplane.ControlPlane, namespace: str, body: Mapping[str, Any]) -> str:
    with kubeclients.admin(plane) as api, pytest.raises(client.ApiException) as raised:
        client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    assert raised.value.status == 403, raised.value.body
    message: str = json.loads(raised.value.body)["message"]
    return message


def test_controller_labels_nodes_and_posts_events(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    del cluster
    h100 = eventually(_labelled(control_plane, f"h100-{RUN}"), "H100 node labels")
    a100 = eventually(_labelled(control_plane, f"a100-{RUN}"), "A100 node labels")
    assert h100[gpustack.STATE_LABEL] == "compliant"
    assert h100[gpustack.CUDA_CAPABILITY_LABEL] == "12040"
    assert a100[gpustack.STATE_LABEL] == "non-compliant"
    assert a100[gpustack.CUDA_CAPABILITY_LABEL] == "11000"

    def events() -> list[Any]:
        with kubeclients.admin(control_plane) as api:
            found = client.EventsV1Api(api).list_namespaced_event(
                "default", field_selector=f"regarding.name=a100-{RUN}"
            )
        return [e for e in found.items if e.reporting_controller == "muster.dev/operator"]

    event = eventually(events, "an Event on the A100 node")[0]
    assert event.reason == "GPUStackNonCompliant"
    assert event.type == "Warning"
    assert "R450" in event.note and "end of life" in event.note

    with kubeclients.admin(control_plane) as api:
        policy = client.CustomObjectsApi(api).get_cluster_custom_object(
            crds.GROUP, crds.VERSION, "gpustackpolicies", "gpu-e2e"
        )
    compiled = [c for c in policy["status"]["conditions"] if c["type"] == "Compiled"]
    assert compiled[0]["status"] == "True"

    table = peers.run_tool(
        "kubectl",
        f"--kubeconfig={control_plane.kubeconfig}",
        "get",
        "nodes",
        f"-l={SUITE_LABEL}=gpu",
        f"-L={gpustack.STATE_LABEL},{gpustack.CUDA_CAPABILITY_LABEL}",
    ).stdout
    print(f"--- kubectl get nodes -L ---\n{table}")
    assert f"h100-{RUN}" in table and "non-compliant" in table


def test_gpu_pod_gets_affinity_and_lands_only_on_a_compliant_node(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    eventually(_labelled(control_plane, f"h100-{RUN}"), "H100 node labels")
    eventually(_labelled(control_plane, f"a100-{RUN}"), "A100 node labels")
    namespace = _namespace(control_plane)
    with kubeclients.admin(control_plane) as api:
        core: Any = client.CoreV1Api(api)
        created = core.create_namespaced_pod(namespace, _gpu_pod("train", cluster["cuda124"]))
        expressions = _affinity(created)
        assert expressions == [
            (gpustack.STATE_LABEL, "NotIn", ["non-compliant", "unknown"]),
            (gpustack.CUDA_CAPABILITY_LABEL, "Gt", ["12039"]),
        ]

        def bind(pod: str, node: str) -> None:
            core.create_namespaced_pod_binding(
                pod,
                namespace,
                {"metadata": {"name": pod}, "target": {"kind": "Node", "name": node}},
                _preload_content=False,
            )

        with pytest.raises(client.ApiException) as raised:
            bind("train", f"a100-{RUN}")
        assert raised.value.status == 403, raised.value.body
        message = json.loads(raised.value.body)["message"]
        assert f"node a100-{RUN} is non-compliant" in message
        assert "binding of pod train" in message

        # The older bindings collection does the same and is judged the same.
        with pytest.raises(client.ApiException) as raised:
            core.create_namespaced_binding(
                namespace,
                {"metadata": {"name": "train"}, "target": {"kind": "Node", "name": f"a100-{RUN}"}},
                _preload_content=False,
            )
        assert raised.value.status == 403, raised.value.body
        assert f"node a100-{RUN} is non-compliant" in json.loads(raised.value.body)["message"]

        bind("train", f"h100-{RUN}")
        assert core.read_namespaced_pod("train", namespace).spec.node_name == f"h100-{RUN}"


def test_pod_no_known_node_can_run_is_warned_about_and_refused_at_binding(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    """A node that could run it may still be added (an autoscaler scaling a pool from zero):
    admission warns, and the binding to a node too old for it is refused."""
    eventually(_labelled(control_plane, f"h100-{RUN}"), "H100 node labels")
    namespace = _namespace(control_plane)
    with kubeclients.admin(control_plane) as api:
        core: Any = client.CoreV1Api(api)
        created, _, headers = core.create_namespaced_pod_with_http_info(
            namespace, _gpu_pod("new", cluster["cuda128"])
        )
        assert _affinity(created)[1] == (gpustack.CUDA_CAPABILITY_LABEL, "Gt", ["12079"])
        (warning,) = [w for w in warnings_of(headers) if "needs cuda>=12.8" in w]
        assert f"h100-{RUN}: its driver supports CUDA 12.4, needed 12.8" in warning
        assert "stays Pending until a node that can run it joins" in warning
        with pytest.raises(client.ApiException) as raised:
            core.create_namespaced_pod_binding(
                "new",
                namespace,
                {"metadata": {"name": "new"}, "target": {"kind": "Node", "name": f"h100-{RUN}"}},
                _preload_content=False,
            )
    assert raised.value.status == 403, raised.value.body
    message = json.loads(raised.value.body)["message"]
    assert f"node h100-{RUN} cannot run cuda>=12.8" in message
    assert "its driver supports CUDA 12.4, needed 12.8" in message


def test_a_trainjobs_trainer_is_placed_like_a_gpu_pod_at_apply_time(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    """A TrainJob (real CRD) whose trainer asks for GPUs with an image of its own is judged as
    a GPU pod would be; nothing is written into it, and one taking its image from the runtime
    is left to the pods the runtime creates."""
    workloadkinds.install_crds(control_plane)
    eventually(_labelled(control_plane, f"h100-{RUN}"), "H100 node labels")
    namespace = _namespace(control_plane)
    gpus = {"limits": {"nvidia.com/gpu": "8"}}

    def trainjob(name: str, **trainer: Any) -> dict[str, Any]:
        return {
            "apiVersion": "trainer.kubeflow.org/v1alpha1",
            "kind": "TrainJob",
            "metadata": {"name": name},
            "spec": {
                "runtimeRef": {"name": "torch-distributed"},
                "trainer": {"numNodes": 2, "resourcesPerNode": gpus, **trainer},
            },
        }

    with kubeclients.admin(control_plane) as api:
        custom: Any = client.CustomObjectsApi(api)

        def create(body: dict[str, Any]) -> Any:
            return custom.create_namespaced_custom_object(
                "trainer.kubeflow.org", "v1alpha1", namespace, "trainjobs", body
            )

        # No node known now can run CUDA 12.8: a warning (a node may be added for it); its
        # pods' bindings decide.
        too_new, _, headers = custom.create_namespaced_custom_object_with_http_info(
            "trainer.kubeflow.org",
            "v1alpha1",
            namespace,
            "trainjobs",
            trainjob("too-new", image=cluster["cuda128"]),
        )
        (warning,) = [w for w in warnings_of(headers) if "needs cuda>=12.8" in w]
        assert "pod template /spec/trainer" in warning
        assert f"h100-{RUN}: its driver supports CUDA 12.4, needed 12.8" in warning
        assert (
            too_new["spec"]["trainer"]
            == trainjob("too-new", image=cluster["cuda128"])["spec"]["trainer"]
        )
        admitted = create(trainjob("fits", image=cluster["cuda124"]))
        assert (
            admitted["spec"]["trainer"]
            == trainjob("fits", image=cluster["cuda124"])["spec"]["trainer"]
        )
        create(trainjob("runtime-image"))


def test_node_name_on_a_non_compliant_node_is_denied(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    eventually(_labelled(control_plane, f"a100-{RUN}"), "A100 node labels")
    namespace = _namespace(control_plane)
    body = _gpu_pod("pinned", cluster["cuda124"], nodeName=f"a100-{RUN}")
    message = _denial(control_plane, namespace, body)
    assert f"node a100-{RUN} is non-compliant" in message
    assert "R450" in message


def test_ld_preload_in_a_gpu_image_is_denied(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    namespace = _namespace(control_plane)
    message = _denial(control_plane, namespace, _gpu_pod("evil", cluster["preload"]))
    assert "LD_PRELOAD=/tmp/evil.so" in message
    assert "CVE-2025-23266" in message


def test_annotation_overrides_the_image_requirement(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    namespace = _namespace(control_plane)
    body = _gpu_pod("override", cluster["cuda128"])
    body["metadata"]["annotations"] = {"muster.dev/cuda-requirement": "cuda>=12.2"}
    with kubeclients.admin(control_plane) as api:
        created = client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    assert _affinity(created)[1] == (gpustack.CUDA_CAPABILITY_LABEL, "Gt", ["12019"])


def test_non_gpu_pod_is_left_alone(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    namespace = _namespace(control_plane)
    body = {
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": cluster["cuda128"]}]},
    }
    with kubeclients.admin(control_plane) as api:
        created = client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    assert created.spec.affinity is None


def test_node_agent_attestation_backs_the_labels_and_a_tampered_module_is_caught(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str], tmp_path: Path
) -> None:
    del cluster
    name = f"attested-{RUN}"
    root = gpuroots.host_root(tmp_path, driver="550.54.15")  # what the H100's labels claim
    publish_node(control_plane, name, root)

    def state(wanted: str) -> Callable[[], bool]:
        return lambda: _node_labels(control_plane, name).get(gpustack.STATE_LABEL) == wanted

    eventually(state("compliant"), "the attested node to be compliant")
    assert _node_labels(control_plane, name)[gpustack.CUDA_CAPABILITY_LABEL] == "12040"

    (root / gpuroots.MODULE).write_bytes(b"\x28\xb5\x2f\xfd a patched nvidia module")
    publish_node(control_plane, name, root)
    eventually(state("non-compliant"), "the tampered node to be non-compliant")

    def tamper_event() -> list[Any]:
        with kubeclients.admin(control_plane) as api:
            found = client.EventsV1Api(api).list_namespaced_event(
                "default", field_selector=f"regarding.name={name}"
            )
        return [e for e in found.items if e.reason == "GPUStackNonCompliant"]

    note = eventually(tamper_event, "an Event about the tampered node")[0].note
    assert "compliant -> non-compliant" in note
    assert f"kernel module /{gpuroots.MODULE} has digest" in note


def test_a_policy_that_does_not_compile_says_so_in_its_status(
    control_plane: controlplane.ControlPlane, cluster: dict[str, str]
) -> None:
    del cluster
    name = f"broken-{RUN}"
    body = {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "GPUStackPolicy",
        "metadata": {"name": name},
        "spec": {"allowedCudaVersions": [{"min": "12.8", "max": "12.4"}]},  # schema-valid
    }
    with kubeclients.admin(control_plane) as api:
        custom: Any = client.CustomObjectsApi(api)
        custom.create_cluster_custom_object(crds.GROUP, crds.VERSION, "gpustackpolicies", body)

        def compiled() -> dict[str, Any] | None:
            got = custom.get_cluster_custom_object(
                crds.GROUP, crds.VERSION, "gpustackpolicies", name
            )
            conditions = (got.get("status") or {}).get("conditions") or []
            return next((c for c in conditions if c["type"] == "Compiled"), None)

        try:
            condition = eventually(compiled, "the Compiled condition")
        finally:
            custom.delete_cluster_custom_object(crds.GROUP, crds.VERSION, "gpustackpolicies", name)
    assert condition["status"] == "False"
    assert condition["reason"] == "SpecInvalid"
    assert "range is empty: min 12.8 is not below max 12.4" in condition["message"]
