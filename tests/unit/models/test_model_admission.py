"""The model gate as the pipeline runs it, with its index fed the way the operator's watches
feed it (no API call is made: every lookup it needs is already in memory)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from muster.kernel import findings, gates, reviews, subjects
from muster.models import gate as modeladmission
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi, registries
from muster.platform import namespaces as platformnamespaces
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
OCI = "sha256:" + "22" * 32
IMAGE = "registry.example/muster@sha256:" + "44" * 32
TRAINER = "registry.example/trainer@sha256:" + "55" * 32


def gate(namespace_labels: dict[str, str]) -> modeladmission.ModelGate:
    # An address nothing listens on: the test fails loudly if the gate ever calls out.
    kube = kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))
    catalog = modeladmission.ModelCatalog(kube, max_age=float("inf"))
    # As the namespace watch feeds it, and never older than it may be.
    namespaces = platformnamespaces.NamespaceIndex(kube, ttl=float("inf"))
    namespaces.update("team", namespace_labels)
    assert catalog.model_changed("bert", {"digest": OMS}, {}, 1) is None
    assert (
        catalog.model_changed("llama", {"digest": OMS, "ociReference": f"r.example/l@{OCI}"}, {}, 1)
        is None
    )
    assert catalog.model_changed("broken", {"digest": "nope"}, {}, 1) is not None
    assert (
        catalog.policy_changed("ml", {"namespaceSelector": {"matchLabels": {"team": "ml"}}}) is None
    )
    return modeladmission.ModelGate(
        catalog=catalog,
        namespaces=namespaces,
        kube=kube,
        registries=registries.RegistryClient(),
        verifier_image=IMAGE,
    )


def subject(spec: dict[str, Any], annotations: dict[str, str]) -> subjects.Subject:
    data = reviews.validate(
        review(object={"metadata": {"name": "p", "annotations": annotations}, "spec": spec})
    )
    found = subjects.from_review(data, mode=findings.Mode.ENFORCE, own_namespace="muster-system")
    assert found is not None
    return found


SPEC = {
    "containers": [{"name": "main", "image": TRAINER}],
    "volumes": [
        {"name": "w", "emptyDir": {}},
        {"name": "img", "image": {"reference": f"r.example/copy@{OCI}"}},
    ],
}
DECLARED = {modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"w": "bert"})}


def judge(
    target: modeladmission.ModelGate, spec: dict[str, Any], phase: gates.Phase
) -> gates.GateResult:
    return asyncio.run(target.judge(subject(spec, DECLARED), phase))


def test_namespaces_no_policy_selects_are_left_alone() -> None:
    result = judge(gate({"team": "web"}), SPEC, gates.Phase.VALIDATE)
    assert result == gates.GateResult()


def test_validate_refuses_a_pod_whose_verifier_is_missing_or_tampered() -> None:
    target = gate({"team": "ml"})
    missing = judge(target, SPEC, gates.Phase.VALIDATE)
    assert [(f.reason, f.subject) for f in missing.findings] == [
        ("ModelVerifierMissing", 'volume "w"')
    ]
    tampered = modelgate.verifier_container("w", OMS, "evil.example/fake-muster:1")
    result = judge(target, {**SPEC, "initContainers": [tampered]}, gates.Phase.VALIDATE)
    assert [f.reason for f in result.findings] == ["ModelVerifierMissing"]
    genuine = modelgate.verifier_container("w", OMS, IMAGE)
    assert judge(target, {**SPEC, "initContainers": [genuine]}, gates.Phase.VALIDATE).findings == ()


def test_mutate_injects_the_verifier_and_names_both_models() -> None:
    result = judge(gate({"team": "ml"}), SPEC, gates.Phase.MUTATE)
    assert result.findings == ()
    paths = [op["path"] for op in result.patch]
    assert paths == [
        "/spec/initContainers",
        "/metadata/annotations/muster.dev~1models",
        "/metadata/labels",
    ]
    assert result.patch[0]["value"] == [modelgate.verifier_container("w", OMS, IMAGE)]
    assert json.loads(result.patch[1]["value"]) == [
        {"name": "bert", "digest": OMS},
        {"name": "llama", "digest": OMS},
    ]


def test_an_invalid_model_is_not_approved() -> None:
    spec = {**SPEC, "volumes": [{"name": "w", "emptyDir": {}}]}
    data = reviews.validate(
        review(
            object={
                "metadata": {
                    "name": "p",
                    "annotations": {
                        modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"w": "broken"})
                    },
                },
                "spec": spec,
            }
        )
    )
    found = subjects.from_review(data, mode=findings.Mode.ENFORCE, own_namespace=None)
    assert found is not None
    target = gate({"team": "ml"})
    target.catalog.min_reload_interval = float("inf")  # a miss may not reach for the API here
    target.catalog._loaded_at = 0.0  # as if listed at start-up
    result = asyncio.run(target.judge(found, gates.Phase.VALIDATE))
    assert [(f.reason, f.subject) for f in result.findings] == [("ModelNotApproved", 'volume "w"')]
