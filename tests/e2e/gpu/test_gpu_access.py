"""GPUs without a request, tried by a tenant through the real apiserver and a real ``muster run``.

A tenant (a ServiceAccount with ordinary rights over its namespace) asks for no GPU but sets
``NVIDIA_VISIBLE_DEVICES``, in the pod's env, through a ConfigMap it writes, or by running
NVIDIA's CUDA base image (whose real config, built from NVIDIA's recipe and pushed to the real
test registry, sets ``all``). Where a GPUStackPolicy applies that is denied, or warned about in
a policy's warn mode; ``void``/``none`` pass, a GPU-requesting pod is judged as before, and a
namespace no GPUStackPolicy selects is left alone. Nodes: the node agent's report of the
toolkit's real ``config.toml`` makes a node non-compliant under ``requireEnvvarDevicesOff``.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.gpu import nodeagent
from muster.gpu.rules import stack as gpustack
from muster.kernel import crds
from muster.platform import controlplane
from tests import cudaimages, gpuroots, kubeclients, paths, peers, tenants
from tests.e2e.gpu.conftest import NAMESPACE_LABELS, SUITE_LABEL, eventually, publish_node
from tests.integration import docblocks

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:5]
SELECT = "muster.dev/gpu-access-e2e"  # which of this module's policies selects a namespace
# Images no ImagePolicy covers are the image gate's business, not this test's.
UNCOVERED_ALLOWED = {"muster.dev/uncovered-images": "allow"}
TOOLKIT = paths.FIXTURES / "gpu" / "container-toolkit"
H100_LABELS = (
    paths.FIXTURES / "gpu" / "gfd-labels" / "gpu-operator-H100-mig-single-node-labels.json"
)


def _documented() -> list[docblocks.Block]:
    """docs/gpu-stack.md's two denial messages: the pod's env, then the image config."""
    blocks = docblocks.named("real", "tests/e2e/gpu/test_gpu_access.py")
    assert len(blocks) == 2
    return blocks


def _core(api: client.ApiClient) -> Any:
    return client.CoreV1Api(api)  # plain dicts are valid bodies; the stubs say models


def _apps(api: client.ApiClient) -> Any:
    return client.AppsV1Api(api)


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "GPUStackPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def _h100_labels() -> dict[str, str]:
    raw: dict[str, str] = json.loads(H100_LABELS.read_text())
    return {k: v for k, v in raw.items() if k != "kubernetes.io/hostname"}


@pytest.fixture(scope="module")
def setting(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    gpu_operator: localoperator.LocalOperator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Images (the real CUDA base config, a plain one), this module's policies, a GPU node."""
    del gpu_operator
    workdir = tmp_path_factory.mktemp("gpu-access")
    cuda = peers.push_image(
        registry, "nvidia/cuda", "12.4.1-base-ubuntu22.04",
        env=cudaimages.dockerfile_env(), workdir=workdir,
    )  # fmt: skip
    plain = peers.push_image(registry, "team/web", "1", env={"PATH": "/usr/bin"}, workdir=workdir)
    policies: dict[str, dict[str, Any]] = {
        f"gpu-access-enforce-{RUN}": {"namespaceSelector": {"matchLabels": {SELECT: f"on-{RUN}"}}},
        f"gpu-access-warn-{RUN}": {
            "mode": "warn",
            "namespaceSelector": {"matchLabels": {SELECT: f"warn-{RUN}"}},
        },
    }
    node = f"access-h100-{RUN}"
    with kubeclients.admin(control_plane) as api:
        custom: Any = client.CustomObjectsApi(api)
        for name, spec in policies.items():
            custom.create_cluster_custom_object(
                crds.GROUP, crds.VERSION, "gpustackpolicies", _policy(name, spec)
            )
        _core(api).create_node(
            {"metadata": {"name": node, "labels": {**_h100_labels(), SUITE_LABEL: "gpu"}}}
        )
    yield {
        "cuda": f"{registry.host}/nvidia/cuda@{cuda}",
        "plain": f"{registry.host}/team/web@{plain}",
        "registry": registry.host,
        "node": node,
    }
    with kubeclients.admin(control_plane) as api:
        _core(api).delete_node(node)
        for name in policies:
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                crds.GROUP, crds.VERSION, "gpustackpolicies", name
            )


def _tenant(plane: controlplane.ControlPlane, policy: str | None) -> tenants.Tenant:
    """A fresh namespace judged by the GPU suite's operator, selected by this module's
    ``on`` (enforce) or ``warn`` policy or by none, and its tenant."""
    labels = {**NAMESPACE_LABELS, **UNCOVERED_ALLOWED}
    if policy is not None:
        labels[SELECT] = f"{policy}-{RUN}"
    namespace = kubeclients.namespace(plane, "gpu-access", labels)
    return tenants.tenant(plane, namespace)


def _pod(image: str, **container: Any) -> dict[str, Any]:
    name = f"p-{uuid.uuid4().hex[:6]}"
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image, **container}]},
    }


def _visible(value: str) -> list[dict[str, str]]:
    return [{"name": "NVIDIA_VISIBLE_DEVICES", "value": value}]


def _create(tenant: tenants.Tenant, body: dict[str, Any]) -> tuple[Any, list[str]]:
    """Create the pod as the tenant: the pod and the apiserver's Warning headers."""
    with contextlib.closing(tenant.api()) as api:
        created, _, headers = _core(api).create_namespaced_pod_with_http_info(
            tenant.namespace, body
        )
    warnings = [w for k, w in (headers or {}).items() if k.lower() == "warning"]
    # A Warning header is `299 - "<text>"`, quotes and backslashes in the text escaped.
    return created, [re.sub(r"\\(.)", r"\1", w.split(" ", 2)[2][1:-1]) for w in warnings]


def _refused(tenant: tenants.Tenant, body: dict[str, Any]) -> str:
    """The apiserver's refusal message of creating the pod as the tenant."""
    with contextlib.closing(tenant.api()) as api, pytest.raises(client.ApiException) as raised:
        _core(api).create_namespaced_pod(tenant.namespace, body)
    assert raised.value.status == 403, raised.value.body
    message: str = json.loads(raised.value.body)["message"]
    return message


def test_env_all_without_a_gpu_request_is_denied(
    control_plane: controlplane.ControlPlane, setting: dict[str, str]
) -> None:
    tenant = _tenant(control_plane, "on")
    message = _refused(tenant, _pod(setting["plain"], env=_visible("all")))
    assert (
        'container "app": requests no GPU, yet NVIDIA_VISIBLE_DEVICES=all from the pod\'s env'
        in message
    )
    assert "set NVIDIA_VISIBLE_DEVICES=void" in message
    documented = _documented()[0]
    assert docblocks.matches(documented, message) == ""


def test_the_real_cuda_image_config_is_denied(
    control_plane: controlplane.ControlPlane, setting: dict[str, str]
) -> None:
    tenant = _tenant(control_plane, "on")
    message = _refused(tenant, _pod(setting["cuda"]))
    assert f"NVIDIA_VISIBLE_DEVICES=all from the image config of {setting['cuda']}" in message
    documented = _documented()[1]
    assert docblocks.matches(documented, message, {"registry.example": setting["registry"]}) == ""
    # NVIDIA's own example: a request of zero GPUs gets none from the device plugin, and the
    # toolkit then honours the image's variable.
    zero = _pod(setting["cuda"], resources={"limits": {"nvidia.com/gpu": "0"}})
    assert "from the image config of" in _refused(tenant, zero)


def test_a_configmap_the_tenant_writes_counts_as_set(
    control_plane: controlplane.ControlPlane, setting: dict[str, str]
) -> None:
    tenant = _tenant(control_plane, "on")
    with contextlib.closing(tenant.api()) as api:
        _core(api).create_namespaced_config_map(
            tenant.namespace,
            {"metadata": {"name": "gpu"}, "data": {"NVIDIA_VISIBLE_DEVICES": "all"}},
        )
    message = _refused(tenant, _pod(setting["plain"], envFrom=[{"configMapRef": {"name": "gpu"}}]))
    assert "NVIDIA_VISIBLE_DEVICES from envFrom ConfigMap gpu, unreadable at admission" in message
    key_ref = {"configMapKeyRef": {"name": "gpu", "key": "NVIDIA_VISIBLE_DEVICES"}}
    body = _pod(setting["plain"], env=[{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": key_ref}])
    assert "from the pod's env from ConfigMap gpu key NVIDIA_VISIBLE_DEVICES" in _refused(
        tenant, body
    )
    # env wins over envFrom: the documented fix works with the ConfigMap still there.
    fixed = _pod(
        setting["plain"], envFrom=[{"configMapRef": {"name": "gpu"}}], env=_visible("void")
    )
    assert _create(tenant, fixed)[0].metadata.name == fixed["metadata"]["name"]


def test_an_image_whose_config_cannot_be_read_fails_closed(
    control_plane: controlplane.ControlPlane, setting: dict[str, str]
) -> None:
    tenant = _tenant(control_plane, "on")
    missing = f"{setting['registry']}/nothing/here@sha256:{'0' * 64}"
    message = _refused(tenant, _pod(missing))
    assert f"cannot read image {missing}" in message
    assert "whether its image sets NVIDIA_VISIBLE_DEVICES cannot be checked" in message
    # Setting the variable in the pod spec settles it without reading the image.
    answer = _create(tenant, _pod(missing, env=_visible("void")))
    assert not [w for w in answer[1] if "NVIDIA_VISIBLE_DEVICES" in w]


@pytest.mark.parametrize("value", ["void", "none"])
def test_void_and_none_are_admitted_even_on_the_cuda_image(
    control_plane: controlplane.ControlPlane, setting: dict[str, str], value: str
) -> None:
    tenant = _tenant(control_plane, "on")
    created, warnings = _create(tenant, _pod(setting["cuda"], env=_visible(value)))
    assert created.spec.containers[0].env[0].value == value
    assert not [w for w in warnings if "NVIDIA_VISIBLE_DEVICES" in w]


def test_init_ephemeral_and_workload_containers_are_judged_too(
    control_plane: controlplane.ControlPlane, setting: dict[str, str]
) -> None:
    tenant = _tenant(control_plane, "on")
    init = _pod(setting["plain"])
    init["spec"]["initContainers"] = [{"name": "setup", "image": setting["cuda"]}]
    assert 'init container "setup": requests no GPU' in _refused(tenant, init)

    running, _ = _create(tenant, _pod(setting["plain"]))
    debug = {
        "spec": {
            "ephemeralContainers": [
                {"name": "debugger", "image": setting["cuda"], "targetContainerName": "app"}
            ]
        }
    }
    with contextlib.closing(tenant.api()) as api, pytest.raises(client.ApiException) as raised:
        _core(api).patch_namespaced_pod_ephemeralcontainers(
            running.metadata.name,
            tenant.namespace,
            debug,
            _content_type="application/strategic-merge-patch+json",
        )
    assert raised.value.status == 403, raised.value.body
    assert (
        'ephemeral container "debugger": requests no GPU'
        in json.loads(raised.value.body)["message"]
    )

    template = _pod(setting["plain"], env=_visible("all"))
    template["metadata"] = {"labels": {"app": "web"}}
    deployment = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    }
    with contextlib.closing(tenant.api()) as api, pytest.raises(client.ApiException) as raised:
        _apps(api).create_namespaced_deployment(tenant.namespace, deployment)
    assert raised.value.status == 403, raised.value.body
    assert (
        "NVIDIA_VISIBLE_DEVICES=all from the pod's env" in json.loads(raised.value.body)["message"]
    )


def test_a_gpu_requesting_pod_is_judged_as_before(
    control_plane: controlplane.ControlPlane, setting: dict[str, str]
) -> None:
    """The device plugin sets the variable for the GPUs it hands out: the rule is not for
    containers that request one (their node's toolkit setting is, below)."""
    tenant = _tenant(control_plane, "on")
    body = _pod(setting["cuda"], env=_visible("all"), resources={"limits": {"nvidia.com/gpu": "1"}})
    created, warnings = _create(tenant, body)
    required = created.spec.affinity.node_affinity
    terms = required.required_during_scheduling_ignored_during_execution.node_selector_terms
    assert [(t.match_expressions[0].key, t.match_expressions[0].operator) for t in terms] == [
        (gpustack.STATE_LABEL, "NotIn")
    ] * 2  # steered off nodes judged bad, with and without a CUDA capability label
    assert terms[0].match_expressions[0].values == ["non-compliant", "unknown"]
    assert not [w for w in warnings if "NVIDIA_VISIBLE_DEVICES" in w]


def test_a_namespace_no_gpu_stack_policy_selects_is_left_alone(
    control_plane: controlplane.ControlPlane, setting: dict[str, str]
) -> None:
    tenant = _tenant(control_plane, None)
    created, warnings = _create(tenant, _pod(setting["cuda"], env=_visible("all")))
    assert created.metadata.name
    assert not [w for w in warnings if "NVIDIA_VISIBLE_DEVICES" in w]


def test_a_warn_policy_warns(
    control_plane: controlplane.ControlPlane, setting: dict[str, str]
) -> None:
    tenant = _tenant(control_plane, "warn")
    created, warnings = _create(tenant, _pod(setting["cuda"]))
    assert created.metadata.name
    (warning,) = [w for w in warnings if "NVIDIA_VISIBLE_DEVICES" in w]
    assert 'muster: container "app": requests no GPU, yet NVIDIA_VISIBLE_DEVICES=all' in warning


def test_a_node_whose_toolkit_honours_the_variable_is_non_compliant(
    control_plane: controlplane.ControlPlane, setting: dict[str, str], tmp_path: Path
) -> None:
    node = f"access-toolkit-{RUN}"
    root = gpuroots.host_root(tmp_path, driver="550.54.15")  # what the H100's labels claim
    config = root / nodeagent.TOOLKIT_CONFIGS[0].lstrip("/")
    config.parent.mkdir(parents=True)
    packaged = (TOOLKIT / "config.toml.ubuntu").read_text()
    config.write_text(packaged)
    policy = f"gpu-access-toolkit-{RUN}"

    def state() -> str | None:
        with kubeclients.admin(control_plane) as api:
            labels = _core(api).read_node(node).metadata.labels or {}
        return labels.get(gpustack.STATE_LABEL)

    def events() -> list[Any]:
        with kubeclients.admin(control_plane) as api:
            found = client.EventsV1Api(api).list_namespaced_event(
                "default", field_selector=f"regarding.name={node}"
            )
        return [e for e in found.items if e.reason == "GPUStackNonCompliant"]

    with kubeclients.admin(control_plane) as api:
        _core(api).create_node(
            {"metadata": {"name": node, "labels": {**_h100_labels(), SUITE_LABEL: "gpu"}}}
        )
        client.CustomObjectsApi(api).create_cluster_custom_object(
            crds.GROUP, crds.VERSION, "gpustackpolicies",
            _policy(policy, {"requireEnvvarDevicesOff": True}),
        )  # fmt: skip
    try:
        publish_node(control_plane, node, root)
        eventually(lambda: state() == "non-compliant", "the default-configured node")
        note = eventually(events, "an Event on the node")[0].note
        assert "accept-nvidia-visible-devices-envvar-when-unprivileged is true or unset" in note
        # NVIDIA's hardening, as its docs give it: the key uncommented and set to false.
        key = "accept-nvidia-visible-devices-envvar-when-unprivileged"
        config.write_text(packaged.replace(f"#{key} = true", f"{key} = false"))
        publish_node(control_plane, node, root)
        eventually(lambda: state() == "compliant", "the hardened node")
    finally:
        with kubeclients.admin(control_plane) as api:
            _core(api).delete_node(node)
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                crds.GROUP, crds.VERSION, "gpustackpolicies", policy
            )
