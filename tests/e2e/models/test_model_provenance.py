"""Model provenance through the real apiserver and a real ``muster run``: the operator verifies
provenance made by the real cosign (``attest-blob`` over the OMS digest) into the Model's status,
and a ModelPolicy requiring verified provenance denies a pod mounting a Model without it, naming
the Model and why, and admits one with it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.models import files as modelfiles
from muster.platform import controlplane
from tests import attesting, kubeclients, peers
from tests import modelprovenance as making
from tests.commandline import muster
from tests.e2e.models.conftest import NAMESPACE_LABELS, SUITE_LABEL
from tests.e2e.workloads import (
    GROUP,
    TRAINER,
    VERSION,
    create_as_admin,
    eventually,
    mounting_pod,
    registered,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("models_operator")]

ORG_CI = "predicate.runDetails.builder.id.startsWith('https://github.com/acme/')"


@pytest.fixture(scope="module")
def attested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A model's OMS digest, the CI's public key, and bundles by the real cosign."""
    workdir = tmp_path_factory.mktemp("model-provenance")
    model = workdir / "tiny"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x03" * 2048)
    digest = modelfiles.measure(model).digest
    key, public = attesting.generate_key(workdir, "ci")
    return {
        "model": str(model),
        "digest": digest,
        "public": public.read_text(),
        "good": making.attest(key, digest, workdir),
        "other_subject": making.attest(key, "sha256:" + "0e" * 32, workdir),
        "elsewhere": making.attest(key, digest, workdir, making.slsa_v1("https://evil.example/b")),
    }


def _provenance(attested: dict[str, str], bundle: str) -> dict[str, Any]:
    return {
        "bundle": bundle,
        "authorities": [{"name": "acme-ci", "key": {"data": attested["public"]}}],
        "conditions": [{"name": "org-ci", "expression": ORG_CI}],
    }


def _model(objects: Any, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = f"prov-{uuid.uuid4().hex[:6]}"
    status: dict[str, Any] = registered(objects, "models", "Model", name, spec)["status"]
    return name, status


def _condition(status: dict[str, Any]) -> dict[str, Any]:
    (found,) = [c for c in status["conditions"] if c["type"] == "ProvenanceVerified"]
    return dict(found)


def _pod(model: str) -> dict[str, Any]:
    return mounting_pod(
        f"serve-{uuid.uuid4().hex[:6]}",
        [{"name": "weights", "emptyDir": {}}],
        {"muster.dev/model-volumes": json.dumps({"weights": model})},
    )


def _denied(plane: controlplane.ControlPlane, namespace: str, body: dict[str, Any]) -> str:
    try:
        create_as_admin(plane, namespace, body)
    except client.ApiException as error:
        assert error.status == 403, error.body
        return str(json.loads(error.body or "{}")["message"])
    return ""


def test_the_operator_verifies_provenance_into_the_models_status(
    control_plane: controlplane.ControlPlane, objects: Any, attested: dict[str, str]
) -> None:
    name, status = _model(
        objects,
        {"digest": attested["digest"], "provenance": _provenance(attested, attested["good"])},
    )
    verified = _condition(status)
    assert (verified["status"], verified["reason"]) == ("True", "Verified")
    assert f"built by {making.BUILDER}" in verified["message"]
    recorded = status["provenance"]
    assert recorded["digest"] == attested["digest"]
    assert recorded["predicateType"] == "https://slsa.dev/provenance/v1"
    assert recorded["builder"] == making.BUILDER
    assert recorded["source"] == making.SOURCE
    assert recorded["authority"] == "acme-ci"
    assert [m["uri"] for m in recorded["materials"]] == [
        making.SOURCE,
        "hf://datasets/acme/corpus@v3",
    ]
    # Another subject and a failed condition are refused, each saying why.
    # muster model verify --model checks it from a workstation, as the operator does.
    kubeconfig = ("--kubeconfig", str(control_plane.kubeconfig))
    code, out, _ = muster("model", "verify", attested["model"], "--model", name, *kubeconfig)
    assert code == 0, out
    assert f"provenance: built by {making.BUILDER} from {making.SOURCE}" in out
    other_name, other = _model(
        objects,
        {
            "digest": attested["digest"],
            "provenance": _provenance(attested, attested["other_subject"]),
        },
    )
    refused = _condition(other)
    assert (refused["status"], refused["reason"]) == ("False", "ProvenanceNotVerified")
    assert "has no subject with digest " + attested["digest"] in refused["message"]
    assert other.get("provenance") is None
    code, out, _ = muster("model", "verify", attested["model"], "--model", other_name, *kubeconfig)
    assert code == 1
    assert "has no subject with digest" in out
    _, elsewhere = _model(
        objects,
        {"digest": attested["digest"], "provenance": _provenance(attested, attested["elsewhere"])},
    )
    failed = _condition(elsewhere)
    assert (failed["status"], failed["reason"]) == ("False", "ProvenanceConditionFailed")
    assert 'predicate.runDetails.builder.id = "https://evil.example/b"' in failed["message"]
    objects.delete_cluster_custom_object(GROUP, VERSION, "models", name)


def test_a_policy_requiring_provenance_denies_models_without_it_and_admits_one_with_it(
    control_plane: controlplane.ControlPlane, objects: Any, attested: dict[str, str]
) -> None:
    mark = uuid.uuid4().hex[:6]
    namespace = kubeclients.namespace(
        control_plane, "models", {**NAMESPACE_LABELS, "muster.dev/e2e-provenance": mark}
    )
    policy = f"e2e-provenance-{mark}"
    kubeclients.create_cluster_object(
        objects,
        "modelpolicies",
        "ModelPolicy",
        policy,
        {
            "namespaceSelector": {
                "matchLabels": {SUITE_LABEL: "models", "muster.dev/e2e-provenance": mark}
            },
            "requireProvenance": True,
        },
    )
    try:
        good, _ = _model(
            objects,
            {"digest": attested["digest"], "provenance": _provenance(attested, attested["good"])},
        )
        bare, _ = _model(objects, {"digest": attested["digest"]})
        wrong, _ = _model(
            objects,
            {
                "digest": attested["digest"],
                "provenance": _provenance(attested, attested["other_subject"]),
            },
        )
        # The policy is watched into the operator's index: wait until it decides.
        message = eventually(lambda: _denied(control_plane, namespace, _pod(bare)), "the denial")
        assert "ModelProvenanceNotVerified" in message
        assert f"Model {bare!r} has no verified provenance and policy requires one" in message
        assert "the Model names none" in message
        message = _denied(control_plane, namespace, _pod(wrong))
        assert f"Model {wrong!r} has no verified provenance" in message
        assert "has no subject with digest" in message
        created = create_as_admin(control_plane, namespace, _pod(good))
        assert json.loads(created.metadata.annotations["muster.dev/models"]) == [
            {"name": good, "digest": attested["digest"]}
        ]
        # Elsewhere (the suite's own policy requires nothing) the bare Model is admitted.
        other = kubeclients.namespace(control_plane, "models", NAMESPACE_LABELS)
        assert create_as_admin(control_plane, other, _pod(bare)).metadata.name
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, "modelpolicies", policy)


def test_provenance_attached_to_the_models_oci_artifact_admits_its_image_volume(
    control_plane: controlplane.ControlPlane,
    objects: Any,
    registry: peers.Registry,
    tmp_path: Path,
) -> None:
    """The bundle is an OCI referrer of the Model's artifact (the test registry has no
    referrers API: the operator finds it through the tag fallback)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x09" * 1536)
    digest = modelfiles.measure(model).digest
    key, public = attesting.generate_key(tmp_path, "ci")
    repository = f"models/provenance-{uuid.uuid4().hex[:6]}"
    artifact = peers.push_image(
        registry, repository, "v1",
        files={"model/model.safetensors": (model / "model.safetensors").read_bytes()},
        workdir=tmp_path,
    )  # fmt: skip
    making.attach(registry, repository, artifact, making.attest(key, digest, tmp_path))
    reference = f"{registry.host}/{repository}@{artifact}"
    name, status = _model(
        objects,
        {
            "digest": digest,
            "ociReference": reference,
            "provenance": {
                "authorities": [{"name": "acme-ci", "key": {"data": public.read_text()}}],
                "conditions": [{"name": "org-ci", "expression": ORG_CI}],
            },
        },
    )
    verified = _condition(status)
    assert (verified["status"], verified["reason"]) == ("True", "Verified"), verified
    assert status["provenance"]["builder"] == making.BUILDER
    mark = uuid.uuid4().hex[:6]
    namespace = kubeclients.namespace(
        control_plane, "models", {**NAMESPACE_LABELS, "muster.dev/e2e-provenance": mark}
    )
    policy = f"e2e-provenance-oci-{mark}"
    kubeclients.create_cluster_object(
        objects,
        "modelpolicies",
        "ModelPolicy",
        policy,
        {
            "namespaceSelector": {"matchLabels": {"muster.dev/e2e-provenance": mark}},
            "requireProvenance": True,
        },
    )
    try:
        # In force once a Model without provenance is refused in that namespace.
        bare, _ = _model(objects, {"digest": digest})
        message = eventually(lambda: _denied(control_plane, namespace, _pod(bare)), "the denial")
        assert f"Model {bare!r} has no verified provenance" in message
        volume = {
            "name": "weights",
            "image": {"reference": reference, "pullPolicy": "IfNotPresent"},
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "served"},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": TRAINER,
                        "volumeMounts": [{"name": "weights", "mountPath": "/models"}],
                    }
                ],
                "volumes": [volume],
            },
        }
        created = create_as_admin(control_plane, namespace, pod)
        assert json.loads(created.metadata.annotations["muster.dev/models"]) == [
            {"name": name, "digest": digest}
        ]
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, "modelpolicies", policy)
