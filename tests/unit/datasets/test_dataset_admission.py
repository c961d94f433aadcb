"""The dataset gate as the pipeline runs it, beside the model gate, with both indexes fed the way
the operator's watches feed them (no API call is made: every lookup is already in memory)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from muster.admission import pipeline
from muster.datasets import catalog as datasetcatalog
from muster.datasets import gate as datasetadmission
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import findings, gates, jsonpatches, reviews, subjects
from muster.models import gate as modeladmission
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi, registries
from muster.platform import namespaces as platformnamespaces
from muster.signatures.rules.verifiers import verifier_container
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
DATA = "sha256:" + "66" * 32
IMAGE = "registry.example/muster@sha256:" + "44" * 32
TRAINER = "registry.example/trainer@sha256:" + "55" * 32


def unreachable() -> kubeapi.KubeApi:
    # An address nothing listens on: the test fails loudly if a gate ever calls out.
    return kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))


def namespaces(kube: kubeapi.KubeApi) -> platformnamespaces.NamespaceIndex:
    index = platformnamespaces.NamespaceIndex(kube, ttl=float("inf"))
    index.update("team", {"team": "ml"})
    return index


def dataset_gate(**policy: Any) -> datasetadmission.DatasetGate:
    kube = unreachable()
    catalog = datasetcatalog.DatasetCatalog(kube, max_age=float("inf"))
    catalog.min_reload_interval = float("inf")  # a miss may not reach for the API here
    catalog._loaded_at = 0.0  # as if listed at start-up
    assert catalog.dataset_changed("corpus", {"digest": DATA, "license": "MIT"}, {}, 1) is None
    assert (
        catalog.dataset_changed(
            "nc", {"digest": DATA, "license": "Apache-2.0 AND CC-BY-NC-4.0"}, {}, 1
        )
        is None
    )
    selector = {"namespaceSelector": {"matchLabels": {"team": "ml"}}}
    assert catalog.policy_changed("data", {**selector, **policy}) is None
    return datasetadmission.DatasetGate(
        catalog=catalog,
        namespaces=namespaces(kube),
        kube=kube,
        registries=registries.RegistryClient(),
        verifier_image=IMAGE,
    )


def model_gate() -> modeladmission.ModelGate:
    kube = unreachable()
    catalog = modeladmission.ModelCatalog(kube, max_age=float("inf"))
    assert catalog.model_changed("bert", {"digest": OMS}, {}, 1) is None
    assert catalog.policy_changed("ml", {}) is None
    return modeladmission.ModelGate(
        catalog=catalog,
        namespaces=namespaces(kube),
        kube=kube,
        registries=registries.RegistryClient(),
        verifier_image=IMAGE,
    )


POD: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "annotations": {
            modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"weights": "bert"}),
            datasetregistry.DATASET_VOLUMES_ANNOTATION: json.dumps({"data": "corpus"}),
        },
    },
    "spec": {
        "containers": [{"name": "main", "image": TRAINER}],
        "volumes": [
            {"name": "weights", "emptyDir": {}},
            {"name": "data", "nfs": {"server": "nfs.example", "path": "/corpus"}},
        ],
    },
}


def run(
    target: datasetadmission.DatasetGate, judged: subjects.Subject, phase: gates.Phase
) -> gates.GateResult:
    async def judge() -> gates.GateResult:
        try:
            return await target.judge(judged, phase)
        finally:
            await target.kube.close()

    return asyncio.run(judge())


def subject(obj: dict[str, Any], operation: str = "CREATE") -> subjects.Subject:
    data = reviews.validate(review(object=obj, operation=operation))
    found = subjects.from_review(data, mode=findings.Mode.ENFORCE, own_namespace="muster-system")
    assert found is not None
    return found


def test_mutate_adds_the_verifier_and_names_the_dataset() -> None:
    result = run(dataset_gate(), subject(POD), gates.Phase.MUTATE)
    patched = jsonpatches.apply(POD, result.patch)
    assert patched["spec"]["initContainers"] == [verifier_container("data", DATA, IMAGE)]
    assert patched["metadata"]["labels"] == {datasetregistry.USES_DATASETS_LABEL: "true"}
    assert datasetregistry.decode_datasets_annotation(
        patched["metadata"]["annotations"][datasetregistry.DATASETS_ANNOTATION]
    ) == [("corpus", DATA)]


def test_validate_refuses_a_missing_verifier_and_admits_the_genuine_one() -> None:
    target = dataset_gate()
    missing = run(target, subject(POD), gates.Phase.VALIDATE)
    assert [(f.reason, f.subject) for f in missing.findings] == [
        ("DatasetVerifierMissing", 'volume "data"')
    ]
    assert missing.findings[0].policy is not None
    assert missing.findings[0].policy.name == "data"
    verified = {
        **POD,
        "spec": {**POD["spec"], "initContainers": [verifier_container("data", DATA, IMAGE)]},
    }
    assert run(target, subject(verified), gates.Phase.VALIDATE).findings == ()


def test_a_licence_the_policy_refuses_denies_naming_volume_licence_and_rule() -> None:
    obj = json.loads(json.dumps(POD))
    obj["metadata"]["annotations"][datasetregistry.DATASET_VOLUMES_ANNOTATION] = json.dumps(
        {"data": "nc"}
    )
    target = dataset_gate(licenses={"deny": ["CC-BY-NC-*"]})
    result = run(target, subject(obj), gates.Phase.VALIDATE)
    assert [(f.reason, f.subject) for f in result.findings] == [
        ("DatasetLicenseNotAllowed", 'volume "data"')
    ]
    assert "CC-BY-NC-4.0 is not allowed (deny CC-BY-NC-*)" in result.findings[0].message
    # Refused data gets no verifier and the pod is not let by in mutation either.
    mutated = run(target, subject(obj), gates.Phase.MUTATE)
    assert all("initContainers" not in op["path"] for op in mutated.patch)


def test_pods_are_judged_only_when_created() -> None:
    target = dataset_gate()
    result = run(target, subject(POD, "UPDATE"), gates.Phase.VALIDATE)
    assert result == gates.GateResult()


def test_a_namespace_no_policy_selects_is_left_alone() -> None:
    target = dataset_gate()
    target.namespaces.update("team", {"team": "web"})
    assert run(target, subject(POD), gates.Phase.VALIDATE) == gates.GateResult()


def test_both_gates_patches_combine_through_the_pipeline() -> None:
    """A pod with a model volume and a dataset volume, no init containers and no labels: both
    gates add /spec/initContainers and /metadata/labels, and neither may clobber the other."""
    chain = pipeline.Pipeline(
        active_gates=[model_gate(), dataset_gate()], own_namespace="muster-system"
    )
    data = reviews.validate(review(object=POD))
    response = asyncio.run(chain.review(data, gates.Phase.MUTATE, findings.Mode.ENFORCE))
    assert response["response"]["allowed"] is True
    patch = json.loads(base64.b64decode(response["response"]["patch"]))
    patched = jsonpatches.apply(POD, patch)
    assert patched["spec"]["initContainers"] == [
        verifier_container("weights", OMS, IMAGE),
        verifier_container("data", DATA, IMAGE),
    ]
    assert patched["metadata"]["labels"] == {
        modelregistry.USES_MODELS_LABEL: "true",
        datasetregistry.USES_DATASETS_LABEL: "true",
    }
    annotations = patched["metadata"]["annotations"]
    assert set(annotations) == {
        modelregistry.MODEL_VOLUMES_ANNOTATION,
        datasetregistry.DATASET_VOLUMES_ANNOTATION,
        modelregistry.MODELS_ANNOTATION,
        datasetregistry.DATASETS_ANNOTATION,
    }
    # And the pod so mutated passes validation by both gates.
    validated = asyncio.run(
        chain.review(
            reviews.validate(review(object=patched)), gates.Phase.VALIDATE, findings.Mode.ENFORCE
        )
    )
    assert validated["response"]["allowed"] is True, validated["response"].get("status")


def test_a_pvc_that_cannot_be_read_is_a_lookup_failure() -> None:
    obj = json.loads(json.dumps(POD))
    obj["spec"]["volumes"].append({"name": "more", "persistentVolumeClaim": {"claimName": "c"}})
    result = run(dataset_gate(), subject(obj), gates.Phase.VALIDATE)
    failed = [f for f in result.findings if f.reason == "DatasetLookupFailed"]
    assert [(f.subject, f.mode) for f in failed] == [('PVC "c"', findings.Mode.ENFORCE)]
    assert "cannot tell whether it holds a dataset" in failed[0].message


def test_an_unreadable_registry_fails_closed() -> None:
    target = dataset_gate()
    target.catalog._loaded_at = float("-inf")  # stale: the catalog must be listed again
    target.catalog.max_age = 0.0
    result = run(target, subject(POD), gates.Phase.VALIDATE)
    assert [(f.reason, f.mode) for f in result.findings] == [
        ("DatasetRegistryUnavailable", findings.Mode.ENFORCE)
    ]
    assert "cannot read the dataset registry" in result.findings[0].message
