"""Strict volume mode (``volumes: declaredOnly``): the pure rules (models/rules/strictvolumes.py)
and the model gate running them, with the Model and Dataset catalogs fed as the watches feed
them (no API call is made)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from muster.datasets import catalog as datasetcatalog
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import datamarks, findings, gates, reviews, subjects
from muster.models import gate as modeladmission
from muster.models.rules import registry as modelregistry
from muster.models.rules import strictvolumes
from muster.platform import kubeapi, registries
from muster.platform import namespaces as platformnamespaces
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
MODEL_OCI = "sha256:" + "22" * 32
DATA_OCI = "sha256:" + "33" * 32
UNKNOWN_OCI = "sha256:" + "44" * 32
IMAGE = "registry.example/muster@sha256:" + "55" * 32
TRAINER = "registry.example/trainer@sha256:" + "66" * 32

VOLUMES: dict[str, dict[str, Any]] = {
    "host": {"hostPath": {"path": "/srv/weights"}},
    "share": {"nfs": {"server": "nfs.example", "path": "/weights"}},
    "inline": {"csi": {"driver": "blob.csi.azure.com"}},
    "scratch-claim": {
        "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}
    },
    "disk": {"iscsi": {"targetPortal": "10.0.0.1:3260", "iqn": "iqn.x", "lun": 0}},
}
VOLUME_KINDS = ["hostPath", "nfs", "csi", "ephemeral", "iscsi"]


def template(
    volumes: list[dict[str, Any]], annotations: dict[str, str] | None = None
) -> subjects.PodTemplate:
    metadata: dict[str, Any] = {"name": "p", "annotations": annotations or {}}
    return subjects.PodTemplate(
        pointer="/spec",
        spec={"containers": [{"name": "main", "image": TRAINER}], "volumes": volumes},
        metadata=metadata,
    )


POLICY = findings.PolicyRef(kind="ModelPolicy", name="strict")
STRICT = strictvolumes.Strictness(policy=POLICY, mode=findings.Mode.ENFORCE)


def test_every_data_volume_kind_is_refused_naming_the_volume_and_its_source() -> None:
    found = strictvolumes.undeclared(
        template([{"name": name, **source} for name, source in VOLUMES.items()]),
        STRICT,
        covered=(),
        claims={},
        models_judged=True,
        datasets_judged=False,
    )
    assert [(f.reason, f.subject) for f in found] == [
        ("VolumeNotDeclared", f'volume "{name}"') for name in VOLUMES
    ]
    kinds = [f.message.split(" that is neither")[0] for f in found]
    assert kinds == [f"is a volume of kind {kind}" for kind in VOLUME_KINDS]
    assert all(f.policy == POLICY and f.mode is findings.Mode.ENFORCE for f in found)
    assert "ModelPolicy strict admits only declared data volumes" in found[0].message


def test_volumes_that_hold_no_data_and_covered_uses_pass() -> None:
    volumes = [{"name": kind, kind: {}} for kind in sorted(datamarks.NON_DATA_VOLUME_SOURCES)]
    volumes.append({"name": "weights", "image": {"reference": f"r.example/m@{MODEL_OCI}"}})
    assert (
        strictvolumes.undeclared(
            template(volumes),
            STRICT,
            covered={"weights"},
            claims={},
            models_judged=True,
            datasets_judged=False,
        )
        == []
    )


def claim(name: str, claim_name: str) -> dict[str, Any]:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim_name}}


def pvc(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Any:
    return {"metadata": {"labels": labels or {}, "annotations": annotations or {}}}


def test_pvcs_pass_only_with_a_mark_a_gate_judges_or_the_not_model_data_label() -> None:
    claims = {
        "plain": strictvolumes.claim_marks(pvc()),
        "scratch": strictvolumes.claim_marks(pvc({datamarks.NOT_MODEL_DATA_LABEL: "true"})),
        # An annotation is not the platform's mark: anyone who edits the claim could write it.
        "annotated": strictvolumes.claim_marks(
            pvc(annotations={datamarks.NOT_MODEL_DATA_LABEL: "true"})
        ),
        "data": strictvolumes.claim_marks(pvc({datasetregistry.DATASET_PVC_KEY: "wiki"})),
        "gone": strictvolumes.claim_marks(None),
    }
    volumes = [claim(name, name) for name in claims]
    refused = strictvolumes.undeclared(
        template(volumes),
        STRICT,
        covered=(),
        claims=claims,
        models_judged=True,
        datasets_judged=False,
    )
    assert [f.subject for f in refused] == [
        'volume "plain" (PVC "plain")',
        'volume "annotated" (PVC "annotated")',
        'volume "data" (PVC "data")',
        'volume "gone" (PVC "gone")',
    ]
    assert "is a volume of kind persistentVolumeClaim" in refused[0].message
    assert "declared as Dataset 'wiki', but no DatasetPolicy selects" in refused[2].message
    assert 'PVC "gone" does not exist' in refused[3].message
    # Where a DatasetPolicy judges Datasets, the Dataset's PVC is the dataset gate's.
    judged = strictvolumes.undeclared(
        template(volumes),
        STRICT,
        covered=(),
        claims=claims,
        models_judged=True,
        datasets_judged=True,
    )
    assert 'volume "data" (PVC "data")' not in [f.subject for f in judged]
    # A claim that could not be read has its own finding (ModelLookupFailed), not this one.
    unread = strictvolumes.undeclared(
        template([claim("x", "unreadable")]),
        STRICT,
        covered=(),
        claims={},
        models_judged=True,
        datasets_judged=True,
    )
    assert unread == []


def test_a_model_declaration_no_model_policy_judges_counts_for_nothing() -> None:
    found = strictvolumes.undeclared(
        template(
            [{"name": "w", "nfs": {"server": "s", "path": "/"}}],
            {modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"w": "bert"})},
        ),
        STRICT,
        covered=(),
        claims={},
        models_judged=False,
        datasets_judged=True,
    )
    assert [f.reason for f in found] == ["VolumeNotDeclared"]
    assert "declared as Model 'bert', but no ModelPolicy selects" in found[0].message


def test_strictness_is_enforced_when_any_declared_only_policy_enforces() -> None:
    loose = modelregistry.ModelPolicySpec()
    warn = modelregistry.ModelPolicySpec(mode=findings.Mode.WARN, volumes="declaredOnly")
    data = datasetregistry.DatasetPolicySpec(volumes="declaredOnly")
    assert strictvolumes.strictness({"a": loose}, {}) is None
    only_warn = strictvolumes.strictness({"a": loose, "b": warn}, {})
    assert only_warn is not None
    assert (only_warn.policy.name, only_warn.mode) == ("b", findings.Mode.WARN)
    both = strictvolumes.strictness({"b": warn}, {"data": data})
    assert both is not None
    assert (str(both.policy), both.mode) == ("DatasetPolicy data", findings.Mode.ENFORCE)


# -- through the model gate -------------------------------------------------------------------


def gate(
    *, model_policy: dict[str, Any] | None, dataset_policy: dict[str, Any] | None
) -> modeladmission.ModelGate:
    # An address nothing listens on: the test fails loudly if the gate ever calls out.
    kube = kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))
    catalog = modeladmission.ModelCatalog(kube, max_age=float("inf"))
    datasets = datasetcatalog.DatasetCatalog(kube, max_age=float("inf"))
    namespaces = platformnamespaces.NamespaceIndex(kube, ttl=float("inf"))
    namespaces.update("team", {"team": "ml"})
    selector = {"namespaceSelector": {"matchLabels": {"team": "ml"}}}
    assert (
        catalog.model_changed(
            "llama", {"digest": OMS, "ociReference": f"r.example/llama@{MODEL_OCI}"}, {}, 1
        )
        is None
    )
    assert (
        datasets.dataset_changed(
            "wiki", {"digest": OMS, "ociReference": f"r.example/wiki@{DATA_OCI}"}, {}, 1
        )
        is None
    )
    # As if listed at start-up, and a miss may not reach for the API here.
    for listed in (catalog, datasets):
        listed.min_reload_interval = float("inf")
        listed._loaded_at = 0.0
    if model_policy is not None:
        assert catalog.policy_changed("models", {**selector, **model_policy}) is None
    if dataset_policy is not None:
        assert datasets.policy_changed("data", {**selector, **dataset_policy}) is None
    return modeladmission.ModelGate(
        catalog=catalog,
        namespaces=namespaces,
        kube=kube,
        registries=registries.RegistryClient(),
        verifier_image=IMAGE,
        datasets=datasets,
    )


def subject(volumes: list[dict[str, Any]], annotations: dict[str, str]) -> subjects.Subject:
    spec = {"containers": [{"name": "main", "image": TRAINER}], "volumes": volumes}
    data = reviews.validate(
        review(object={"metadata": {"name": "p", "annotations": annotations}, "spec": spec})
    )
    found = subjects.from_review(data, mode=findings.Mode.ENFORCE, own_namespace="muster-system")
    assert found is not None
    return found


IMAGES = [
    {"name": "model", "image": {"reference": f"r.example/llama@{MODEL_OCI}"}},
    {"name": "data", "image": {"reference": f"r.example/wiki@{DATA_OCI}"}},
    {"name": "stranger", "image": {"reference": f"r.example/who@{UNKNOWN_OCI}"}},
    {"name": "host", "hostPath": {"path": "/srv"}},
    {"name": "tmp", "emptyDir": {}},
]


def reasons(result: gates.GateResult) -> list[tuple[str, str, str | None]]:
    return [(f.reason, f.subject, str(f.policy) if f.policy else None) for f in result.findings]


def test_a_dataset_policy_alone_makes_the_model_gate_run_strict_mode() -> None:
    target = gate(model_policy=None, dataset_policy={"volumes": "declaredOnly"})
    result = asyncio.run(target.judge(subject(IMAGES, {}), gates.Phase.VALIDATE))
    # The registered Model's and Dataset's images are content-addressed: they are declared.
    assert reasons(result) == [
        ("VolumeNotDeclared", 'volume "stranger"', "DatasetPolicy data"),
        ("VolumeNotDeclared", 'volume "host"', "DatasetPolicy data"),
    ]
    # Nothing is judged or written for models where no ModelPolicy selects.
    mutated = asyncio.run(target.judge(subject(IMAGES, {}), gates.Phase.MUTATE))
    assert mutated.patch == ()
    assert (
        asyncio.run(
            gate(model_policy=None, dataset_policy={}).judge(
                subject(IMAGES, {}), gates.Phase.VALIDATE
            )
        )
        == gates.GateResult()
    )


def test_under_a_model_policy_a_dataset_image_is_no_model_use() -> None:
    target = gate(model_policy={"volumes": "declaredOnly"}, dataset_policy=None)
    result = asyncio.run(target.judge(subject(IMAGES, {}), gates.Phase.VALIDATE))
    assert reasons(result) == [
        ("ModelNotApproved", 'image volume "stranger"', "ModelPolicy models"),
        ("VolumeNotDeclared", 'volume "host"', "ModelPolicy models"),
    ]
    mutated = asyncio.run(target.judge(subject(IMAGES, {}), gates.Phase.MUTATE))
    annotation = next(op for op in mutated.patch if op["path"].endswith("muster.dev~1models"))
    assert json.loads(annotation["value"]) == [{"name": "llama", "digest": OMS}]


def test_a_dataset_declaration_exempts_an_image_only_where_a_dataset_policy_judges_it() -> None:
    volumes = [{"name": "smuggled", "image": {"reference": f"r.example/who@{UNKNOWN_OCI}"}}]
    declared = {datasetregistry.DATASET_VOLUMES_ANNOTATION: json.dumps({"smuggled": "wiki"})}
    alone = gate(model_policy={}, dataset_policy=None)
    result = asyncio.run(alone.judge(subject(volumes, declared), gates.Phase.VALIDATE))
    assert reasons(result) == [
        ("ModelNotApproved", 'image volume "smuggled"', "ModelPolicy models")
    ]
    judged = gate(model_policy={}, dataset_policy={})
    result = asyncio.run(judged.judge(subject(volumes, declared), gates.Phase.VALIDATE))
    assert result.findings == ()  # the dataset gate judges it (and refuses a wrong digest)
