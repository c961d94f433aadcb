"""The chart's RBAC is enough: a real ``muster run`` holding only the token of the chart's
operator ServiceAccount passes the gate scenarios end to end.

The chart is installed into the real control plane (``--no-hooks`` on uninstall: the pre-delete
Job needs a kubelet, see tests/integration/chart/test_install.py); its own webhook
configurations select no namespace (nothing serves behind its Service without a kubelet).
The operator runs here, with a kubeconfig whose only credential is a token the apiserver issued
(TokenRequest) for the release's ServiceAccount, with kopf peering on the release's peering
object; webhook configurations of its own point at it. Every scenario makes it read or write
through that identity: ImagePolicy status, registry-backed signature checks and pinning, Node
labels, Model status, Events. Its log must hold no refusal from the apiserver.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import model_signing
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client

from muster.app import localoperator
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.images.rules import policies as imagepolicies
from muster.kernel import crds
from muster.models import files as modelfiles
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane
from tests import gpuroots, kubeclients, paths, peers
from tests.e2e.suites import SUITE_LABEL, suite_labels, suite_operator, suite_selector
from tests.integration.chart import rendering
from tests.integration.chart.rendering import CHART
from tests.integration.images.conftest import Signer, sign_v3, signers

pytestmark = pytest.mark.e2e

__all__ = ["signers"]  # the fixture, imported to be used here

SUITE = "chart-rbac"
LABELS = suite_labels(SUITE)
# The GPU and model gates' namespaces: their images are covered by no ImagePolicy, which they
# allow explicitly (the operator keeps the chart's default, deny, for the image gate's own).
UNCOVERED_ALLOWED = {**LABELS, imagepolicies.UNCOVERED_LABEL: "allow"}
GROUP, VERSION = crds.GROUP, crds.VERSION
RUN = uuid.uuid4().hex[:5]
GPU = paths.FIXTURES / "gpu"
VERIFIER_IMAGE = "registry.example/muster/muster@sha256:" + "5e" * 32


def _wait(check: Callable[[], Any], what: str, timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def release(
    control_plane: controlplane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The chart, installed: (release name, namespace)."""
    name = f"muster-rbac-{RUN}"
    namespace = kubeclients.namespace(control_plane, "muster-rbac")
    values = tmp_path_factory.mktemp("chart-rbac") / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "webhook": {
                    "timeoutSeconds": 2,
                    # No namespace carries this: the operator below has webhooks of its own.
                    "namespaceSelectorExpressions": [
                        {"key": "muster.dev/chart-rbac", "operator": "In", "values": [name]}
                    ],
                },
            }
        )
    )

    def helm(*args: str) -> None:
        rendering.helm(
            *args, f"--namespace={namespace}", f"--kubeconfig={control_plane.kubeconfig}"
        )

    helm("install", name, str(CHART), f"--values={values}")
    try:
        yield name, namespace
    finally:
        helm("uninstall", name, "--no-hooks", "--ignore-not-found")


@pytest.fixture(scope="module")
def token_kubeconfig(
    control_plane: controlplane.ControlPlane,
    release: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A kubeconfig whose one credential is a token for the chart's operator ServiceAccount."""
    name, namespace = release
    with kubeclients.admin(control_plane) as api:
        core = client.CoreV1Api(api)
        account = core.read_namespaced_service_account(name, namespace)  # the chart made it
        token = core.create_namespaced_service_account_token(
            account.metadata.name, namespace, {"spec": {"expirationSeconds": 3600}}
        ).status.token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "plane",
                "cluster": {
                    "server": control_plane.url,
                    "certificate-authority": control_plane.state.ca_file,
                },
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "plane", "user": "operator"}}],
        "current-context": "operator",
    }
    path = tmp_path_factory.mktemp("chart-rbac-token") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    release: tuple[str, str],
    token_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    name, namespace = release
    with suite_operator(
        control_plane,
        configuration="muster.dev.chart-rbac-e2e",
        own_namespace=namespace,
        workdir=tmp_path_factory.mktemp("muster-chart-rbac"),
        select=suite_selector(SUITE),
        extra_args=(
            f"--insecure-registry={registry.host}",
            f"--verifier-image={VERIFIER_IMAGE}",
            f"--peering={name}",  # the chart's ClusterKopfPeering, under its narrow rule
        ),
        kubeconfig=token_kubeconfig,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def objects(control_plane: controlplane.ControlPlane) -> Iterator[Any]:
    with kubeclients.admin(control_plane) as api:
        yield client.CustomObjectsApi(api)


def _condition(objects: Any, plural: str, name: str, kind: str) -> Callable[[], Any]:
    def probe() -> dict[str, Any] | None:
        obj = objects.get_cluster_custom_object(GROUP, VERSION, plural, name)
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") == kind:
                return dict(condition)
        return None

    return probe


def _denial(plane: controlplane.ControlPlane, namespace: str, body: dict[str, Any]) -> str:
    with kubeclients.admin(plane) as api, pytest.raises(client.ApiException) as raised:
        client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    assert raised.value.status == 403, raised.value.body
    message: str = json.loads(raised.value.body)["message"]
    return message


def _pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": image}], **spec},
    }


def test_image_policy_compiles_and_images_are_judged_and_pinned(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    operator: localoperator.LocalOperator,
    objects: Any,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    del operator
    policy = f"chart-rbac-{RUN}"
    kubeclients.create_cluster_object(
        objects,
        "imagepolicies",
        "ImagePolicy",
        policy,
        {
            "images": [f"{registry.host}/chart-rbac/signatures/**"],
            "namespaceSelector": {"matchLabels": {SUITE_LABEL: SUITE}},
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
    )
    try:
        compiled = _wait(_condition(objects, "imagepolicies", policy, "Compiled"), "Compiled")
        assert (compiled["status"], compiled["reason"]) == ("True", "Compiled"), compiled
        peers.push_image(registry, "chart-rbac/signatures/unsigned", "v1", workdir=tmp_path)
        digest = peers.push_image(registry, "chart-rbac/signatures/signed", "v1", workdir=tmp_path)
        sign_v3(signers["alice"], f"{registry.host}/chart-rbac/signatures/signed@{digest}")
        namespace = kubeclients.namespace(control_plane, "chart-rbac", LABELS)

        unsigned = registry.ref("chart-rbac/signatures/unsigned", "v1")
        message = _denial(control_plane, namespace, _pod("unsigned", unsigned))
        assert f"ImagePolicy '{policy}'" in message and "no signature found" in message

        signed = registry.ref("chart-rbac/signatures/signed", "v1")
        with kubeclients.admin(control_plane) as api:
            created = client.CoreV1Api(api).create_namespaced_pod(namespace, _pod("signed", signed))
        assert created.spec.containers[0].image == f"{signed}@{digest}"
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, "imagepolicies", policy)


@pytest.fixture(scope="module")
def gpu_nodes(
    control_plane: controlplane.ControlPlane,
    operator: localoperator.LocalOperator,
    objects: Any,
) -> Iterator[tuple[str, str]]:
    """A GPUStackPolicy and two GPU nodes (a current driver, an end-of-life one)."""
    del operator
    policy_name = f"chart-rbac-{RUN}"
    policy = copy.deepcopy(gpupolicies.DEFAULT_POLICY)
    for key in ("minimumToolkitVersion", "deniedToolkitVersions"):
        policy.pop(key, None)  # no node agent here: no toolkit attestation
    policy["knownGoodModuleDigests"] = [gpuroots.module_digest()]
    policy["endOfLifeBranches"] = [
        {"branch": 450, "source": "test: R450 reached end of life"},
        {"branch": 470, "source": "test: R470 reached end of life"},
    ]
    kubeclients.create_cluster_object(
        objects, "gpustackpolicies", "GPUStackPolicy", policy_name, policy
    )
    raw = json.loads(
        (GPU / "gfd-labels" / "gpu-operator-H100-mig-single-node-labels.json").read_text()
    )
    h100 = {k: v for k, v in raw.items() if k != "kubernetes.io/hostname"}
    sets = yaml.safe_load((GPU / "gfd-labels" / "label-sets.yaml").read_text())["label_sets"]
    a100 = dict(next(s for s in sets if s["id"].endswith("#L199-L212"))["labels"])
    a100.pop("nvidia.com/gpu.machine")  # "NVIDIA DGX" is no valid label value
    base, old = {**h100, SUITE_LABEL: SUITE}, {**a100, SUITE_LABEL: SUITE}
    current, eol = f"rbac-h100-{RUN}", f"rbac-old-{RUN}"
    with kubeclients.admin(control_plane) as api:
        core: Any = client.CoreV1Api(api)
        for name, labels in ((current, base), (eol, old)):
            core.create_node({"metadata": {"name": name, "labels": labels}})
    try:
        yield current, eol
    finally:
        with kubeclients.admin(control_plane) as api:
            for name in (current, eol):
                client.CoreV1Api(api).delete_node(name)
        objects.delete_cluster_custom_object(GROUP, VERSION, "gpustackpolicies", policy_name)


def _node_labels(plane: controlplane.ControlPlane, name: str) -> dict[str, str]:
    with kubeclients.admin(plane) as api:
        return dict(client.CoreV1Api(api).read_node(name).metadata.labels or {})


def test_gpu_nodes_are_labelled_events_posted_and_gpu_pods_steered(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    gpu_nodes: tuple[str, str],
    objects: Any,
    tmp_path: Path,
) -> None:
    current, eol = gpu_nodes
    policy = f"chart-rbac-{RUN}"
    compiled = _wait(_condition(objects, "gpustackpolicies", policy, "Compiled"), "Compiled")
    assert compiled["status"] == "True", compiled

    def labelled(name: str) -> Callable[[], dict[str, str] | None]:
        def probe() -> dict[str, str] | None:
            labels = _node_labels(control_plane, name)
            return labels if gpustack.STATE_LABEL in labels else None

        return probe

    assert _wait(labelled(current), "node labels")[gpustack.STATE_LABEL] == "compliant"
    assert _wait(labelled(eol), "node labels")[gpustack.STATE_LABEL] == "non-compliant"

    def events() -> list[Any]:
        with kubeclients.admin(control_plane) as api:
            found = client.EventsV1Api(api).list_namespaced_event(
                "default", field_selector=f"regarding.name={eol}"
            )
        return [e for e in found.items if e.reporting_controller == "muster.dev/operator"]

    event = _wait(events, "an Event on the end-of-life node")[0]
    assert (event.reason, event.type) == ("GPUStackNonCompliant", "Warning")

    entries = yaml.safe_load((GPU / "cuda-images" / "cuda-image-env.yaml").read_text())["entries"]
    entry = next(
        e for e in entries if e["tag"] == "12.4.1-base-ubuntu22.04" and e["docker_arch"] == "amd64"
    )
    env = {
        k: str(entry[k]) for k in ("NVARCH", "CUDA_VERSION", "NVIDIA_REQUIRE_CUDA") if k in entry
    }
    digest = peers.push_image(registry, "chart-rbac/cuda", "12.4", env=env, workdir=tmp_path)
    namespace = kubeclients.namespace(control_plane, "chart-rbac-gpu", UNCOVERED_ALLOWED)
    body = _pod("train", f"{registry.host}/chart-rbac/cuda@{digest}")
    body["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    with kubeclients.admin(control_plane) as api:
        created = client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    required = (
        created.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    )
    terms = [
        [(e.key, e.operator, e.values) for e in term.match_expressions]
        for term in required.node_selector_terms
    ]
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


@pytest.fixture(scope="module")
def signed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A model directory signed with the real model_signing: (digest, bundle, public PEM)."""
    root = tmp_path_factory.mktemp("chart-rbac-model")
    model = root / "tiny"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (model / "config.json").write_text('{"layers": 1}\n')
    key = ec.generate_private_key(ec.SECP256R1())
    private = root / "signer.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = root / "model.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(
        model, signature
    )
    return modelfiles.measure(model).digest, signature.read_text(), public.decode()


def test_a_models_status_is_written_and_its_pods_counted(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    operator: localoperator.LocalOperator,
    objects: Any,
    signed_model: tuple[str, str, str],
    tmp_path: Path,
) -> None:
    del operator
    digest, bundle, public = signed_model
    image_digest = peers.push_image(
        registry,
        "chart-rbac/model",
        "v1",
        files={"model/model.safetensors": b"weights"},
        workdir=tmp_path,
    )
    reference = f"{registry.host}/chart-rbac/model@{image_digest}"
    name, policy = f"rbac-model-{RUN}", f"chart-rbac-{RUN}"
    kubeclients.create_cluster_object(
        objects,
        "modelpolicies",
        "ModelPolicy",
        policy,
        {"namespaceSelector": {"matchLabels": {SUITE_LABEL: SUITE}}},
    )
    kubeclients.create_cluster_object(
        objects,
        "models",
        "Model",
        name,
        {
            "digest": digest,
            "ociReference": reference,
            "source": "hf://acme/tiny@0123abc",
            "format": "safetensors",
            "license": "apache-2.0",
            "signature": {"bundle": bundle, "publicKey": public},
        },
    )
    try:
        verified = _wait(_condition(objects, "models", name, "SignatureVerified"), "status")
        assert (verified["status"], verified["reason"]) == ("True", "Verified"), verified
        namespace = kubeclients.namespace(control_plane, "chart-rbac-models", UNCOVERED_ALLOWED)
        body = _pod("uses-model", "registry.example/team/trainer@sha256:" + "ab" * 32)
        body["spec"]["containers"][0]["volumeMounts"] = [{"name": "weights", "mountPath": "/m"}]
        # The suite's GPUStackPolicy selects this namespace too, and this image exists nowhere:
        # saying the container wants no GPU spares the GPU gate a read of its config.
        body["spec"]["containers"][0]["env"] = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]
        body["spec"]["volumes"] = [
            {"name": "weights", "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}
        ]
        with kubeclients.admin(control_plane) as api:
            created = client.CoreV1Api(api).create_namespaced_pod(namespace, body)
        assert json.loads(created.metadata.annotations[modelregistry.MODELS_ANNOTATION]) == [
            {"name": name, "digest": digest}
        ]
        _wait(
            lambda: (
                objects.get_cluster_custom_object(GROUP, VERSION, "models", name)["status"].get(
                    "pods"
                )
                == 1
            ),
            "the Model's pod count in its status",
        )
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, "models", name)
        objects.delete_cluster_custom_object(GROUP, VERSION, "modelpolicies", policy)


def test_the_operator_was_never_refused(
    control_plane: controlplane.ControlPlane,
    operator: localoperator.LocalOperator,
    release: tuple[str, str],
) -> None:
    """Runs last in this module: whatever the scenarios made the operator do, the apiserver
    allowed for the chart's ServiceAccount."""
    log = operator.log.read_text()
    assert "forbidden" not in log.lower(), log[-4000:]
    # An HTTP 403 anywhere, but not the milliseconds of a log timestamp (",403").
    assert re.search(r"(?<![,\d])403(?!\d)", log) is None, log[-4000:]
    # kopf peered through the release's ClusterKopfPeering (patching only that object).
    with kubeclients.admin(control_plane) as api:
        peering = client.CustomObjectsApi(api).get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", release[0]
        )
    assert peering.get("status"), peering
