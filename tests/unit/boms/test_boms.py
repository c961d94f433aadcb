"""The AI-BOM document: CycloneDX 1.6 valid, with models, datasets, training and findings."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from muster.boms.rules import cyclonedx as boms
from muster.models.rules import registry as modelregistry
from muster.vulnerabilities.rules import scans as vulnerabilities
from tests.boms import schema_errors

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "1f" * 32
MODEL_DIGEST = "sha256:" + "2e" * 32
DATA_DIGEST = "sha256:" + "3d" * 32
IMAGE = f"registry.example/acme/trainer:v1@{DIGEST}"


def model() -> dict[str, Any]:
    return {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "llama-ft", "generation": 2},
        "spec": {
            "digest": MODEL_DIGEST,
            "source": "hf://acme/llama-ft",
            "format": "safetensors",
            "license": "LicenseRef-llama3.1",
            "signature": {"keyless": {"identity": "ml@acme.example", "issuer": "https://idp"}},
            "datasets": [
                {
                    "name": "acme-chat",
                    "digest": DATA_DIGEST,
                    "source": "s3://acme/chat",
                    "license": "CC-BY-4.0",
                }
            ],
            "training": {
                "baseModel": "meta-llama/Llama-3.1-8B",
                "configDigest": DIGEST,
                "framework": "pytorch 2.6",
            },
            "card": {
                "description": "A fine-tuned chat model",
                "authors": ["Acme ML"],
                "intendedUse": "customer support",
                "limitations": "English only",
                "task": "text-generation",
            },
        },
        "status": {
            "conditions": [{"type": "SignatureVerified", "status": "True", "observedGeneration": 2}]
        },
    }


def pod(owner: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "trainer-7d9f-abcde",
        "namespace": "ml",
        "annotations": {
            modelregistry.MODELS_ANNOTATION: json.dumps(
                [{"name": "llama-ft", "digest": MODEL_DIGEST}]
            )
        },
    }
    if owner:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "trainer-7d9f",
                "uid": "u",
                "controller": True,
            }
        ]
    return {
        "metadata": metadata,
        "spec": {"nodeName": "gpu-1", "containers": [{"name": "t", "image": IMAGE}]},
    }


def scan() -> vulnerabilities.ImageScanStatus:
    return vulnerabilities.ImageScanStatus(
        scanned_at="2026-06-01T00:00:00Z",
        db_updated_at="2026-05-31T00:00:00Z",
        db_version=2,
        counts={"HIGH": 1},
        findings=(
            vulnerabilities.ScanFinding(
                id="CVE-2099-0001",
                package="libplanted",
                installed_version="1.0-1",
                fixed_version="1.0-2",
                severity="HIGH",
                title="planted",
            ),
        ),
    )


def node() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "gpu-1",
            "labels": {
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/cuda.driver-version.full": "570.124.06",
                "kubernetes.io/hostname": "gpu-1",
            },
            "annotations": {"muster.dev/gpu-attestation": "{}"},
        }
    }


def facts() -> boms.PodFacts:
    return boms.PodFacts(
        pod=pod(),
        images=[
            boms.ImageFacts(
                image=IMAGE, digest=DIGEST, signers=("alice",), policies=("acme",), scan=scan()
            )
        ],
        models=[("llama-ft", model())],
        node=node(),
    )


def build(*parts: dict[str, Any]) -> dict[str, Any]:
    return boms.document(
        "workload ml/Deployment/trainer",
        parts,
        timestamp="2026-06-01T00:00:00Z",
        version="0.1.0",
        serial=uuid.UUID(int=1),
    )


def by_ref(bom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {component["bom-ref"]: component for component in bom["components"]}


def test_workload_bom_is_valid_cyclonedx_1_6_with_the_ai_parts() -> None:
    bom = build(boms.pod_components(facts()))
    assert schema_errors(bom) is None
    components = by_ref(bom)
    image = components[f"image:registry.example/acme/trainer@{DIGEST}"]
    assert image["type"] == "container"
    assert image["version"] == DIGEST
    assert image["hashes"] == [{"alg": "SHA-256", "content": "1f" * 32}]
    assert {"name": "muster:signer", "value": "alice"} in image["properties"]
    model_ = components["model:llama-ft"]
    assert model_["type"] == "machine-learning-model"
    assert model_["version"] == MODEL_DIGEST
    assert model_["licenses"] == [{"expression": "LicenseRef-llama3.1"}]
    assert model_["externalReferences"][0]["url"] == "hf://acme/llama-ft"
    assert model_["modelCard"]["modelParameters"]["task"] == "text-generation"
    assert model_["modelCard"]["considerations"]["useCases"] == ["customer support"]
    assert {"name": "muster:model-signer", "value": "ml@acme.example (https://idp)"} in model_[
        "properties"
    ]
    assert {"name": "muster:signature-verified", "value": "True"} in model_["properties"]
    dataset = components[f"dataset:acme-chat@{DATA_DIGEST}"]
    assert dataset["type"] == "data"
    assert dataset["data"][0]["contents"]["url"] == "s3://acme/chat"
    assert {"ref": "model:llama-ft", "dependsOn": [f"dataset:acme-chat@{DATA_DIGEST}"]} in bom[
        "dependencies"
    ]
    formula = bom["formulation"][0]
    assert {"name": "muster:training.base-model", "value": "meta-llama/Llama-3.1-8B"} in formula[
        "properties"
    ]
    gpu = components["node:gpu-1"]
    assert gpu["type"] == "device"
    labels = {p["name"] for p in gpu["properties"]}
    assert "label:nvidia.com/gpu.product" in labels
    assert "label:kubernetes.io/hostname" not in labels
    [vulnerability] = bom["vulnerabilities"]
    assert vulnerability["id"] == "CVE-2099-0001"
    assert vulnerability["ratings"] == [{"severity": "high"}]
    assert vulnerability["affects"] == [{"ref": image["bom-ref"]}]
    assert components["workload:ml/Deployment/trainer"]["type"] == "application"


def test_merging_pods_of_a_namespace_lists_shared_parts_once() -> None:
    first = boms.pod_components(facts())
    second_pod = pod(owner=False)
    second = boms.pod_components(
        boms.PodFacts(
            pod=second_pod,
            images=[boms.ImageFacts(image=IMAGE, digest=DIGEST)],
            models=[("llama-ft", model()), ("missing", None)],
        )
    )
    bom = build(first, second)
    assert schema_errors(bom) is None
    refs = [c["bom-ref"] for c in bom["components"]]
    assert len(refs) == len(set(refs))
    assert "workload:ml/Pod/trainer-7d9f-abcde" in refs
    assert by_ref(bom)["model:missing"]["properties"] == [
        {"name": "muster:model-registered", "value": "False"}
    ]
    subject = next(d for d in bom["dependencies"] if d["ref"] == "subject")
    assert len(subject["dependsOn"]) == 2


def test_an_unsigned_unscanned_image_says_so() -> None:
    parts = boms.pod_components(
        boms.PodFacts(
            pod=pod(), images=[boms.ImageFacts(image="r.example/a:1", digest=None)], models=[]
        )
    )
    bom = build(parts)
    assert schema_errors(bom) is None
    image = by_ref(bom)["image:r.example/a:1"]
    assert {"name": "muster:signature-verified", "value": "False"} in image["properties"]
    assert "vulnerabilities" not in bom


def test_the_schema_check_catches_a_broken_bom() -> None:
    bom = build(boms.pod_components(facts()))
    bom["components"][1]["type"] = "model"  # not a CycloneDX component type
    assert schema_errors(bom) is not None


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        ({"kind": "ReplicaSet", "name": "web-5c9d8", "controller": True}, ("Deployment", "web")),
        ({"kind": "Job", "name": "train", "controller": True}, ("Job", "train")),
        (None, ("Pod", "p")),
    ],
)
def test_workload_of_a_pod(owner: dict[str, Any] | None, expected: tuple[str, str]) -> None:
    metadata: dict[str, Any] = {"name": "p", "namespace": "ns"}
    if owner:
        metadata["ownerReferences"] = [owner]
    assert boms.workload_key({"metadata": metadata}) == ("ns", *expected)
