# mypy: disable-error-code="no-untyped-call"
# model_signing's public constructors are untyped.
"""The model gate through the real apiserver and a real ``muster run``: approved-model registry,
image volumes judged by digest, verifying init containers, revocation Events and metrics."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import model_signing
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client

from muster import cli
from muster.app import localoperator
from muster.models import files as modelfiles
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane
from tests import kubeclients, peers
from tests.e2e.models.conftest import NAMESPACE_LABELS, SUITE_LABEL, VERIFIER_IMAGE
from tests.e2e.workloads import (
    GROUP,
    TRAINER,
    VERSION,
    create_as_admin,
    denial_as_admin,
    eventually,
    image_volume,
    mounting_pod,
    registered,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("models_operator")]


@pytest.fixture(scope="module", autouse=True)
def policy(plane: controlplane.ControlPlane) -> Iterator[str]:
    name = f"e2e-models-{uuid.uuid4().hex[:6]}"
    spec = {"namespaceSelector": {"matchLabels": {SUITE_LABEL: "models"}}}
    with kubeclients.muster_object(plane, "modelpolicies", "ModelPolicy", name, spec):
        yield name


@pytest.fixture(scope="module")
def signed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """A model directory signed with the real model_signing: (dir, digest, bundle, public PEM)."""
    root = tmp_path_factory.mktemp("signed-model")
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
    return model, modelfiles.measure(model).digest, signature.read_text(), public.decode()


def _conditions(objects: Any, name: str) -> dict[str, dict[str, Any]]:
    status = objects.get_cluster_custom_object(GROUP, VERSION, "models", name)["status"]
    return {c["type"]: c for c in status["conditions"]}


def _model(objects: Any, name: str, spec: dict[str, Any]) -> None:
    registered(objects, "models", "Model", name, spec)


@pytest.fixture(scope="module")
def pushed(registry: peers.Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two real model images in the test registry: name -> pinned reference."""
    workdir = tmp_path_factory.mktemp("model-images")
    refs = {}
    for name in ("approved", "stranger"):
        digest = peers.push_image(
            registry,
            f"models/{name}",
            "v1",
            files={"model/model.safetensors": f"{name}-weights".encode()},
            workdir=workdir,
        )
        refs[name] = f"{registry.host}/models/{name}@{digest}"
    return refs


def test_an_unapproved_image_volume_is_denied_naming_volume_and_reference(
    plane: controlplane.ControlPlane, pushed: dict[str, str]
) -> None:
    namespace = kubeclients.namespace(plane, "models", NAMESPACE_LABELS)
    message = denial_as_admin(
        plane, namespace, mounting_pod("stranger", [image_volume("weights", pushed["stranger"])])
    )
    assert 'image volume "weights"' in message
    assert pushed["stranger"] in message
    assert "is not an approved Model" in message


def test_an_approved_image_volume_is_admitted_and_annotated(
    plane: controlplane.ControlPlane,
    objects: Any,
    pushed: dict[str, str],
    signed_model: tuple[Path, str, str, str],
) -> None:
    _, digest, bundle, public = signed_model
    name = f"approved-{uuid.uuid4().hex[:6]}"
    _model(
        objects,
        name,
        {
            "digest": digest,
            "ociReference": pushed["approved"],
            "source": "hf://acme/tiny@0123abc",
            "format": "safetensors",
            "license": "apache-2.0",
            "signature": {"bundle": bundle, "publicKey": public},
            "datasets": [{"name": "wiki", "license": "cc-by-sa-4.0"}],
        },
    )
    verified = _conditions(objects, name)["SignatureVerified"]
    assert (verified["type"], verified["status"], verified["reason"]) == (
        "SignatureVerified",
        "True",
        "Verified",
    )
    namespace = kubeclients.namespace(plane, "models", NAMESPACE_LABELS)
    created = create_as_admin(
        plane, namespace, mounting_pod("approved", [image_volume("weights", pushed["approved"])])
    )
    assert json.loads(created.metadata.annotations[modelregistry.MODELS_ANNOTATION]) == [
        {"name": name, "digest": digest}
    ]
    assert created.metadata.labels[modelregistry.USES_MODELS_LABEL] == "true"
    assert not created.spec.init_containers  # OCI bytes are content-addressed: no verifier
    eventually(
        lambda: (
            objects.get_cluster_custom_object(GROUP, VERSION, "models", name)["status"].get("pods")
            == 1
        ),
        "the Model's pod count",
    )


def test_a_declared_pvc_model_gets_the_verifier_after_the_storage_initializer(
    plane: controlplane.ControlPlane, objects: Any, signed_model: tuple[Path, str, str, str]
) -> None:
    _, digest, _, _ = signed_model
    name = f"pvc-{uuid.uuid4().hex[:6]}"
    _model(objects, name, {"digest": digest, "format": "safetensors"})
    namespace = kubeclients.namespace(plane, "models", NAMESPACE_LABELS)
    with kubeclients.admin(plane) as api:
        core: Any = client.CoreV1Api(api)
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": "weights-pvc", "labels": {modelregistry.MODEL_PVC_KEY: name}},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
    body = mounting_pod(
        "served",
        [{"name": "weights", "persistentVolumeClaim": {"claimName": "weights-pvc"}}],
        init=[
            {"name": "storage-initializer", "image": TRAINER},
            {"name": "warmup", "image": TRAINER},
        ],
    )
    created = create_as_admin(plane, namespace, body)
    init = created.spec.init_containers
    assert [c.name for c in init] == ["storage-initializer", "muster-verify-weights", "warmup"]
    verifier = init[1]
    assert verifier.image == VERIFIER_IMAGE
    assert verifier.command == ["muster"]
    assert verifier.args == ["model", "verify", "/models/weights", "--digest", digest]
    assert [(m.name, m.mount_path, m.read_only) for m in verifier.volume_mounts] == [
        ("weights", "/models/weights", True)
    ]
    assert verifier.security_context.run_as_non_root is True
    assert verifier.security_context.capabilities.drop == ["ALL"]

    # The same through the annotation that declares a volume as holding a Model.
    declared = mounting_pod(
        "declared",
        [{"name": "data", "emptyDir": {}}],
        annotations={modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": name})},
    )
    created = create_as_admin(plane, namespace, declared)
    assert [c.name for c in created.spec.init_containers] == ["muster-verify-data"]
    unknown = mounting_pod(
        "unknown",
        [{"name": "data", "emptyDir": {}}],
        annotations={modelregistry.MODEL_VOLUMES_ANNOTATION: '{"data": "nobody"}'},
    )
    message = denial_as_admin(plane, namespace, unknown)
    assert "Model 'nobody' is not registered" in message


def _revoked_pods_metric(operator: localoperator.LocalOperator) -> float:
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("muster_pods_using_revoked_models "):
            return float(line.split()[1])
    raise AssertionError("muster_pods_using_revoked_models is not exported")


def test_revoking_a_model_raises_events_on_its_pods_and_the_model_and_the_gauge(
    plane: controlplane.ControlPlane,
    objects: Any,
    signed_model: tuple[Path, str, str, str],
    models_operator: localoperator.LocalOperator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_dir, digest, _, _ = signed_model
    name = f"revoke-{uuid.uuid4().hex[:6]}"
    _model(objects, name, {"digest": digest})
    namespace = kubeclients.namespace(plane, "models", NAMESPACE_LABELS)
    annotations = {modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": name})}
    for pod in ("user-a", "user-b"):
        create_as_admin(
            plane,
            namespace,
            mounting_pod(pod, [{"name": "data", "emptyDir": {}}], annotations=annotations),
        )
    eventually(
        lambda: (
            objects.get_cluster_custom_object(GROUP, VERSION, "models", name)["status"].get("pods")
            == 2
        ),
        "two pods counted",
    )
    before = _revoked_pods_metric(models_operator)
    assert (
        cli.main(
            [
                "model",
                "verify",
                str(model_dir),
                "--model",
                name,
                "--kubeconfig",
                str(plane.kubeconfig),
            ]
        )
        == 0
    )
    assert f"is Model {name}" in capsys.readouterr().out

    objects.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "models",
        name,
        {"spec": {"revoked": True, "revocationReason": "trained on leaked data"}},
    )

    def pod_events() -> list[Any]:
        with kubeclients.admin(plane) as api:
            events_api: Any = client.EventsV1Api(api)
            items = events_api.list_namespaced_event(namespace).items
        return [e for e in items if e.reason == "ModelRevoked"]

    eventually(lambda: len(pod_events()) >= 2, "Events on the pods")

    def model_events() -> list[Any]:
        with kubeclients.admin(plane) as api:
            events_api: Any = client.EventsV1Api(api)
            items = events_api.list_namespaced_event("default").items
        return [e for e in items if e.regarding.kind == "Model" and e.regarding.name == name]

    eventually(model_events, "an Event on the Model")
    eventually(
        lambda: _revoked_pods_metric(models_operator) >= before + 2, "the revoked-pods gauge"
    )
    # Exactly one Event (one series) per object: only the operator whose namespaces these are
    # reports on them, however many operators watch the Model.
    events = pod_events()
    assert sorted(e.regarding.name for e in events) == ["user-a", "user-b"], events
    assert all(e.reporting_controller == "muster.dev/operator" for e in events)
    assert all(e.type == "Warning" and "trained on leaked data" in e.note for e in events)
    [event] = model_events()
    assert event.reason == "ModelRevoked"
    assert "2 running pod(s)" in event.note
    assert f"{namespace}/user-a" in event.note

    # A revoked model is refused to new pods, and by `muster model verify --model`.
    message = denial_as_admin(
        plane,
        namespace,
        mounting_pod("late", [{"name": "data", "emptyDir": {}}], annotations=annotations),
    )
    assert "is revoked: trained on leaked data" in message
    assert (
        cli.main(
            [
                "model",
                "verify",
                str(model_dir),
                "--model",
                name,
                "--kubeconfig",
                str(plane.kubeconfig),
            ]
        )
        == 1
    )
    assert "is revoked" in capsys.readouterr().out


def test_a_tag_is_resolved_through_the_registry_to_the_approved_digest(
    plane: controlplane.ControlPlane,
    objects: Any,
    registry: peers.Registry,
    signed_model: tuple[Path, str, str, str],
    tmp_path: Path,
) -> None:
    _, digest, _, _ = signed_model
    repository = f"models/tagged-{uuid.uuid4().hex[:6]}"
    oci = peers.push_image(
        registry, repository, "v2", files={"model/w.safetensors": b"tagged"}, workdir=tmp_path
    )
    name = f"tagged-{uuid.uuid4().hex[:6]}"
    _model(objects, name, {"digest": digest, "ociReference": f"{registry.host}/{repository}@{oci}"})
    # Warn mode: the digest-pinning rule only warns about the tag, so the model gate's own
    # resolution (the operator asks the registry) decides what the pod is annotated with.
    namespace = kubeclients.namespace(
        plane, "models", {**NAMESPACE_LABELS, "muster.dev/enforce": "warn"}
    )
    created = create_as_admin(
        plane,
        namespace,
        mounting_pod("tagged", [image_volume("weights", f"{registry.host}/{repository}:v2")]),
    )
    assert json.loads(created.metadata.annotations[modelregistry.MODELS_ANNOTATION]) == [
        {"name": name, "digest": digest}
    ]


def test_changing_a_models_digest_raises_events_on_pods_running_the_old_one(
    plane: controlplane.ControlPlane, objects: Any, signed_model: tuple[Path, str, str, str]
) -> None:
    _, digest, _, _ = signed_model
    name = f"moving-{uuid.uuid4().hex[:6]}"
    _model(objects, name, {"digest": digest})
    namespace = kubeclients.namespace(plane, "models", NAMESPACE_LABELS)
    annotations = {modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": name})}
    create_as_admin(
        plane,
        namespace,
        mounting_pod("old-bytes", [{"name": "data", "emptyDir": {}}], annotations=annotations),
    )
    eventually(
        lambda: (
            objects.get_cluster_custom_object(GROUP, VERSION, "models", name)["status"].get("pods")
            == 1
        ),
        "the pod counted",
    )
    objects.patch_cluster_custom_object(
        GROUP, VERSION, "models", name, {"spec": {"digest": "sha256:" + "9f" * 32}}
    )

    def changed() -> list[Any]:
        with kubeclients.admin(plane) as api:
            events_api: Any = client.EventsV1Api(api)
            items = events_api.list_namespaced_event(namespace).items
        return [e for e in items if e.reason == "ModelDigestChanged"]

    [event] = eventually(changed, "an Event on the pod")  # one: only this suite's operator reports
    assert event.regarding.name == "old-bytes"
    assert digest in event.note


def test_a_deployments_pods_come_out_of_the_controllers_with_the_verifier(
    plane: controlplane.ControlPlane, objects: Any, signed_model: tuple[Path, str, str, str]
) -> None:
    _, digest, _, _ = signed_model
    name = f"deployed-{uuid.uuid4().hex[:6]}"
    _model(objects, name, {"digest": digest})
    namespace = kubeclients.namespace(plane, "models", NAMESPACE_LABELS)
    template = mounting_pod(
        "ignored",
        [{"name": "data", "emptyDir": {}}],
        annotations={modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": name})},
        labels={"app": "server"},
    )
    del template["metadata"]["name"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "server"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "server"}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }
    with kubeclients.admin(plane) as api:
        apps: Any = client.AppsV1Api(api)
        created = apps.create_namespaced_deployment(namespace, deployment)
        core: Any = client.CoreV1Api(api)
        assert [c.name for c in created.spec.template.spec.init_containers] == [
            "muster-verify-data"
        ]
        # The ReplicaSet controller's pod passes the validating gate (its verifier is intact).
        pods = eventually(
            lambda: core.list_namespaced_pod(namespace, label_selector="app=server").items,
            "the Deployment's pod",
        )
    assert [c.name for c in pods[0].spec.init_containers] == ["muster-verify-data"]
    assert pods[0].spec.init_containers[0].args[-1] == digest


def test_a_model_the_schema_admits_but_muster_refuses_says_why_in_its_status(
    objects: Any, signed_model: tuple[Path, str, str, str]
) -> None:
    _, digest, bundle, _ = signed_model
    name = f"invalid-{uuid.uuid4().hex[:6]}"
    _model(objects, name, {"digest": digest, "ociReference": "registry.example/models/x:v1"})
    conditions = _conditions(objects, name)
    for kind in ("Compiled", "SignatureVerified"):
        assert (conditions[kind]["status"], conditions[kind]["reason"]) == ("False", "InvalidSpec")
    assert "must be pinned by digest" in conditions["Compiled"]["message"]
    # A licence that is no SPDX expression: the Model is invalid, and Compiled says why.
    unlicensed = f"bad-licence-{uuid.uuid4().hex[:6]}"
    _model(objects, unlicensed, {"digest": digest, "license": "Apache-2.0 AND"})
    compiled = _conditions(objects, unlicensed)["Compiled"]
    assert (compiled["status"], compiled["reason"]) == ("False", "InvalidSpec")
    assert "'Apache-2.0 AND' is not a valid SPDX licence expression" in compiled["message"]
    wrong = f"wrong-key-{uuid.uuid4().hex[:6]}"
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _model(
        objects,
        wrong,
        {"digest": digest, "signature": {"bundle": bundle, "publicKey": other.decode()}},
    )
    conditions = _conditions(objects, wrong)
    assert conditions["Compiled"]["status"] == "True"
    condition = conditions["SignatureVerified"]
    assert (condition["status"], condition["reason"]) == ("False", "SignatureInvalid")
    assert "different key" in condition["message"]


@pytest.mark.parametrize(
    ("algorithm", "shard_size", "options"),
    [
        ("blake3", None, ["--hashing-algorithm", "blake3"]),
        ("blake2", 4096, ["--hashing-algorithm", "blake2", "--shard-size", "4096"]),
    ],
    ids=["blake3-files", "blake2-shards"],
)
def test_a_model_signed_with_another_hashing_choice_is_verified_and_re_measured_the_same_way(
    plane: controlplane.ControlPlane,
    objects: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    algorithm: Literal["blake2", "blake3"],
    shard_size: int | None,
    options: list[str],
) -> None:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}" + bytes(9000))
    (model / "config.json").write_text('{"layers": 1}\n')
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "signer.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / "signer.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    hashing = model_signing.hashing.Config()
    if shard_size is None:
        hashing.use_file_serialization(hashing_algorithm=algorithm)
    else:
        hashing.use_shard_serialization(hashing_algorithm=algorithm, shard_size=shard_size)
    model_signing.signing.Config().use_elliptic_key_signer(
        private_key=tmp_path / "signer.key"
    ).set_hashing_config(hashing).sign(model, tmp_path / "model.sig")
    # `muster model register` writes the Model, hashed the way the signature says.
    name = f"{algorithm}-{uuid.uuid4().hex[:6]}"
    assert cli.main(["model", "register", str(model), "--name", name, "--key", str(public)]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)["spec"]
    digest = spec["digest"]
    assert digest != modelfiles.measure(model).digest  # not the default sha256 digest
    _model(objects, name, spec)
    condition = _conditions(objects, name)["SignatureVerified"]
    assert (condition["status"], condition["reason"]) == ("True", "Verified"), condition

    namespace = kubeclients.namespace(plane, "models", NAMESPACE_LABELS)
    annotations = {modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": name})}
    created = create_as_admin(
        plane,
        namespace,
        mounting_pod("hashed", [{"name": "data", "emptyDir": {}}], annotations=annotations),
    )
    (verifier,) = created.spec.init_containers
    assert verifier.args == ["model", "verify", "/models/data", "--digest", digest, *options]
    # The injected command, run on the model as the node would: intact passes, a byte fails.
    argv = ["model", "verify", str(model), *verifier.args[3:]]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith(f"OK {model} {digest}")
    kubeconfig = ["--kubeconfig", str(plane.kubeconfig)]
    assert cli.main(["model", "verify", str(model), "--model", name, *kubeconfig]) == 0
    capsys.readouterr()
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[5000] ^= 0x01
    weights.write_bytes(bytes(data))
    assert cli.main(argv) == 1
    assert f"expected {digest}" in capsys.readouterr().out
    assert cli.main(["model", "verify", str(model), "--model", name, *kubeconfig]) == 1


def test_a_model_whose_licence_a_policy_denies_is_refused_naming_licence_rule_and_policy(
    plane: controlplane.ControlPlane, objects: Any, signed_model: tuple[Path, str, str, str]
) -> None:
    _, digest, _, _ = signed_model
    run = uuid.uuid4().hex[:6]
    name = f"noncommercial-{run}"
    _model(objects, name, {"digest": digest, "license": "apache-2.0 and cc-by-nc-4.0"})
    policy = f"e2e-licences-{run}"
    selected = {"muster-tests.dev/licences": run}
    kubeclients.create_cluster_object(
        objects,
        "modelpolicies",
        "ModelPolicy",
        policy,
        {"namespaceSelector": {"matchLabels": selected}, "licenses": {"deny": ["CC-BY-NC-*"]}},
    )
    try:
        namespace = kubeclients.namespace(plane, "licences", {**NAMESPACE_LABELS, **selected})
        declared = {modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"weights": name})}
        body = mounting_pod("licensed", [{"name": "weights", "emptyDir": {}}], annotations=declared)

        def refused() -> str | None:
            # The operator takes the new policy up through its watch: until then it admits.
            try:
                created = create_as_admin(
                    plane, namespace, {**body, "metadata": {**body["metadata"]}}
                )
            except client.ApiException as error:
                assert error.status == 403, error.body
                return str(json.loads(error.body or "{}")["message"])
            with kubeclients.admin(plane) as api:
                client.CoreV1Api(api).delete_namespaced_pod(created.metadata.name, namespace)
            return None

        message = eventually(refused, "the licence denial")
        assert (
            f"Model '{name}' is not allowed by ModelPolicy '{policy}': licence 'Apache-2.0 AND "
            "CC-BY-NC-4.0' is refused: CC-BY-NC-4.0 matches deny CC-BY-NC-*"
        ) in message
        assert "[ModelLicenseNotAllowed]" in message
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, "modelpolicies", policy)
