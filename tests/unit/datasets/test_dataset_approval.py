"""Which Datasets a pod or a TrainJob uses, whether each is approved, and the patch."""

from __future__ import annotations

import json
from typing import Any

import pytest

from muster.datasets.rules import approval
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import findings, jsonpatches, reviews, subjects
from muster.signatures.rules.verifiers import verifier_name
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
OCI = "sha256:" + "22" * 32
OTHER = "sha256:" + "33" * 32
IMAGE = "registry.example/muster@sha256:" + "44" * 32
HF = "hf://datasets/acme/corpus@0123456789abcdef0123456789abcdef01234567"


def template(
    spec: dict[str, Any], annotations: dict[str, str] | None = None, pointer: str = "/spec"
) -> subjects.PodTemplate:
    metadata: dict[str, Any] = {"name": "p"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return subjects.PodTemplate(pointer=pointer, spec=spec, metadata=metadata)


def entry(name: str, **spec: Any) -> datasetregistry.DatasetEntry:
    signed = bool(spec.pop("signed", False))
    fields: dict[str, Any] = {"digest": OMS, **spec}
    return datasetregistry.DatasetEntry(
        name, datasetregistry.DatasetSpec.model_validate(fields), signature_verified=signed
    )


def index(*entries: datasetregistry.DatasetEntry) -> datasetregistry.DatasetIndex:
    found = datasetregistry.DatasetIndex()
    for item in entries:
        found.put_dataset(item)
    return found


def policy(**fields: Any) -> approval.EffectivePolicy:
    spec = datasetregistry.DatasetPolicySpec.model_validate(fields)
    effective = approval.effective_policy([spec])
    assert effective is not None
    return effective


ENFORCE = policy()

SPEC: dict[str, Any] = {
    "containers": [{"name": "main", "image": "x"}],
    "volumes": [
        {"name": "art", "image": {"reference": f"r.example/corpus@{OCI}"}},
        {"name": "weights", "image": {"reference": f"r.example/model@{OTHER}"}},
        {"name": "claimed", "persistentVolumeClaim": {"claimName": "corpus-pvc"}},
        {"name": "plain", "persistentVolumeClaim": {"claimName": "scratch"}},
        {"name": "nfs-data", "nfs": {"server": "n", "path": "/d"}},
        {"name": "tmp", "emptyDir": {}},
    ],
}
DIGESTS = {"art": OCI, "weights": OTHER}
DECLARED = {datasetregistry.DATASET_VOLUMES_ANNOTATION: json.dumps({"nfs-data": "crawl"})}
REGISTERED = index(
    entry("corpus", ociReference=f"r.example/corpus@{OCI}"),
    entry("labelled"),
    entry("crawl"),
)


def test_every_way_a_pod_uses_a_dataset_is_found() -> None:
    uses, problems = approval.dataset_uses(
        template(SPEC, DECLARED), {"corpus-pvc": "labelled"}, REGISTERED, DIGESTS
    )
    assert problems == []
    assert [(u.kind, u.where, u.reference, u.claim) for u in uses] == [
        ("imageVolume", "art", f"r.example/corpus@{OCI}", None),  # by its digest
        ("declaredVolume", "nfs-data", "crawl", None),
        ("pvc", "claimed", "labelled", "corpus-pvc"),
    ]
    # The model image volume, the unmarked PVC and the emptyDir are no Dataset's.


def test_a_declared_image_volume_is_a_use_whatever_its_digest() -> None:
    annotations = {datasetregistry.DATASET_VOLUMES_ANNOTATION: json.dumps({"weights": "corpus"})}
    uses, _ = approval.dataset_uses(template(SPEC, annotations), {}, REGISTERED, DIGESTS)
    declared = next(u for u in uses if u.where == "weights")
    assert (declared.kind, declared.declared, declared.digest) == ("imageVolume", "corpus", OTHER)
    match = approval.judge_use(declared, REGISTERED, ENFORCE)
    assert match.finding is not None and match.finding.reason == "DatasetNotApproved"
    assert f"whose ociReference has digest {OCI}" in match.finding.message
    assert OTHER in match.finding.message


def test_declarations_that_make_no_sense_are_findings() -> None:
    unknown = {datasetregistry.DATASET_VOLUMES_ANNOTATION: json.dumps({"ghost": "crawl"})}
    _, problems = approval.dataset_uses(template(SPEC, unknown), {}, REGISTERED, DIGESTS)
    assert [(p.reason, p.subject) for p in problems] == [("DatasetVolumeUnknown", 'volume "ghost"')]
    assert "'crawl'" in problems[0].message
    for raw in ("{not json", '["crawl"]', '{"nfs-data": ""}'):
        broken = {datasetregistry.DATASET_VOLUMES_ANNOTATION: raw}
        uses, problems = approval.dataset_uses(template(SPEC, broken), {}, REGISTERED, DIGESTS)
        assert [p.reason for p in problems] == ["DatasetVolumesInvalid"]
        assert problems[0].subject == f"annotation {datasetregistry.DATASET_VOLUMES_ANNOTATION}"
        assert [u.kind for u in uses] == ["imageVolume"]


def test_an_unresolvable_tag_is_not_let_by_as_if_it_held_no_dataset() -> None:
    spec = {"volumes": [{"name": "art", "image": {"reference": "r.example/corpus:latest"}}]}
    uses, problems = approval.dataset_uses(
        template(spec), {}, REGISTERED, {"art": None}, {"art": "registry down"}
    )
    assert uses == []
    assert [p.reason for p in problems] == ["DatasetReferenceUnresolved"]
    assert "registry down" in problems[0].message


def test_a_trainjob_dataset_initializer_is_a_use() -> None:
    trainjob = {
        "metadata": {"name": "t"},
        "spec": {"initializer": {"dataset": {"storageUri": HF}}, "trainer": {"image": IMAGE}},
    }
    data = reviews.validate(
        review(
            kind={"group": "trainer.kubeflow.org", "version": "v1alpha1", "kind": "TrainJob"},
            resource={
                "group": "trainer.kubeflow.org",
                "version": "v1alpha1",
                "resource": "trainjobs",
            },
            object=trainjob,
        )
    )
    subject = subjects.from_review(data, mode=findings.Mode.ENFORCE, own_namespace="muster")
    assert subject is not None
    uses = approval.source_uses(subject)
    assert [(u.kind, u.reference) for u in uses] == [("sourceUri", HF)]
    assert uses[0].label == "storage URI of the dataset initializer"
    approved = index(entry("corpus", sources=[HF]))
    assert approval.judge_use(uses[0], approved, ENFORCE).finding is None
    unpinned = approval.DatasetUse(
        "sourceUri", "the dataset initializer", "hf://datasets/acme/corpus"
    )
    refused = approval.judge_use(unpinned, approved, ENFORCE).finding
    assert refused is not None and refused.reason == "DatasetNotApproved"
    assert "hf://datasets/acme/corpus" in refused.message and "@<revision>" in refused.message
    broken = approval.DatasetUse("sourceUri", "the dataset initializer", "ftp://x/y")
    invalid = approval.judge_use(broken, approved, ENFORCE).finding
    assert invalid is not None and invalid.reason == "DatasetReferenceInvalid"


def judged(use: approval.DatasetUse, found: datasetregistry.DatasetIndex, **fields: Any) -> str:
    match = approval.judge_use(use, found, policy(**fields))
    if match.finding is None:
        return "approved"
    return f"{match.finding.reason}: {match.finding.message}"


PVC_USE = approval.DatasetUse("pvc", "data", "child", claim="data-pvc")


def test_unregistered_and_revoked_datasets_are_refused() -> None:
    assert judged(PVC_USE, index()).startswith("DatasetNotApproved: Dataset 'child' is not")
    revoked = index(entry("child", revoked=True, revocationReason="PII found"))
    assert judged(PVC_USE, revoked) == "DatasetRevoked: Dataset 'child' is revoked: PII found"


def test_an_invalid_dataset_is_named_as_invalid_with_why() -> None:
    found = index()
    found.invalid["Dataset/child"] = "license: 'Apache-2.0 AND' is not a valid SPDX expression"
    assert judged(PVC_USE, found).startswith(
        "DatasetNotApproved: Dataset 'child' is invalid and approves nothing (license: "
    )


def test_a_revoked_ancestor_revokes_the_child_and_is_named() -> None:
    found = index(
        entry("raw", revoked=True, revocationReason="licence withdrawn"),
        entry("clean", lineage={"parents": ["raw"]}),
        entry("child", lineage={"parents": ["clean"]}),
    )
    assert judged(PVC_USE, found) == (
        "DatasetRevoked: Dataset 'child' is revoked through lineage: its ancestor 'raw' is "
        "revoked: licence withdrawn"
    )


def test_a_broken_lineage_is_refused() -> None:
    missing = index(entry("child", lineage={"parents": ["nowhere"]}))
    verdict = judged(PVC_USE, missing)
    assert verdict.startswith("DatasetLineageInvalid: Dataset 'child' has an invalid lineage:")
    assert "nowhere" in verdict


def test_a_signature_is_needed_only_when_required() -> None:
    unsigned = index(entry("child"))
    assert judged(PVC_USE, unsigned) == "approved"
    assert judged(PVC_USE, unsigned, requireSignature=True).startswith(
        "DatasetSignatureNotVerified: Dataset 'child' has no verified signature"
    )
    assert judged(PVC_USE, index(entry("child", signed=True)), requireSignature=True) == "approved"


@pytest.mark.parametrize(
    ("licence", "verdict"),
    [
        (
            "Apache-2.0 AND CC-BY-NC-4.0",
            "DatasetLicenseNotAllowed: Dataset 'child' is licensed 'Apache-2.0 AND "
            "CC-BY-NC-4.0': CC-BY-NC-4.0 is not allowed (deny CC-BY-NC-*)",
        ),
        ("MIT OR CC-BY-NC-4.0", "approved"),
        ("Apache-2.0", "approved"),
        (
            "GPL-2.0-only WITH Classpath-exception-2.0",
            "DatasetLicenseNotAllowed: Dataset 'child' is licensed 'GPL-2.0-only WITH "
            "Classpath-exception-2.0': GPL-2.0-only WITH Classpath-exception-2.0 is not "
            "allowed (deny GPL-2.0-only WITH Classpath-exception-2.0)",
        ),
    ],
)
def test_licences_are_judged_as_expressions(licence: str, verdict: str) -> None:
    rules = {"deny": ["CC-BY-NC-*", "GPL-2.0-only WITH Classpath-exception-2.0"]}
    assert judged(PVC_USE, index(entry("child", license=licence)), licenses=rules) == verdict


def test_every_selecting_policys_licence_rules_must_pass() -> None:
    one = datasetregistry.DatasetPolicySpec.model_validate({"licenses": {"allow": ["MIT"]}})
    two = datasetregistry.DatasetPolicySpec.model_validate(
        {"mode": "warn", "licenses": {"deny": ["MIT"]}}
    )
    effective = approval.effective_policy([one, two])
    assert effective is not None and effective.mode is findings.Mode.ENFORCE
    match = approval.judge_use(PVC_USE, index(entry("child", license="MIT")), effective)
    assert match.finding is not None and "(deny MIT)" in match.finding.message
    missing = approval.judge_use(PVC_USE, index(entry("child")), effective)
    assert missing.finding is not None
    assert "given no licence: NOASSERTION is not allowed" in missing.finding.message
    deciding = approval.deciding_policy({"b-warn": two, "a-enforce": one, "c": one})
    assert deciding is not None and (deciding.kind, deciding.name) == ("DatasetPolicy", "a-enforce")


def test_warn_mode_findings_carry_the_mode() -> None:
    match = approval.judge_use(PVC_USE, index(), policy(mode="warn"))
    assert match.finding is not None and match.finding.mode is findings.Mode.WARN


def test_the_patch_adds_verifiers_and_names_the_datasets() -> None:
    pod = {"metadata": {"name": "p"}, "spec": SPEC}
    uses, _ = approval.dataset_uses(template(SPEC), {"corpus-pvc": "labelled"}, REGISTERED, DIGESTS)
    matches = [approval.judge_use(u, REGISTERED, ENFORCE) for u in uses]
    patch = approval.verifier_patch(template(SPEC), matches, IMAGE)
    patched = jsonpatches.apply(pod, patch)
    init = patched["spec"]["initContainers"]
    # The OCI artifact is the registered one already: only the PVC is re-measured.
    assert [c["name"] for c in init] == [verifier_name("claimed")]
    assert init[0]["args"][:4] == ["model", "verify", "/models/claimed", "--digest"]
    assert init[0]["args"][4] == OMS
    annotations = patched["metadata"]["annotations"]
    assert datasetregistry.decode_datasets_annotation(
        annotations[datasetregistry.DATASETS_ANNOTATION]
    ) == [("corpus", OMS), ("labelled", OMS)]
    assert patched["metadata"]["labels"] == {datasetregistry.USES_DATASETS_LABEL: "true"}


def test_a_refused_dataset_gets_no_verifier() -> None:
    revoked = index(entry("child", revoked=True))
    match = approval.judge_use(PVC_USE, revoked, ENFORCE)
    spec = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}}]}
    patch = approval.verifier_patch(template(spec), [match], IMAGE)
    assert all("initContainers" not in op["path"] for op in patch)


def test_the_dataset_initializer_container_of_a_trainjobs_pod_is_a_use() -> None:
    spec = {
        "initContainers": [
            {"name": "dataset-initializer", "env": [{"name": "STORAGE_URI", "value": HF}]},
            {"name": "model-initializer", "env": [{"name": "STORAGE_URI", "value": "hf://m@1"}]},
        ],
        "containers": [{"name": "node", "image": "x"}],
    }
    uses, problems = approval.dataset_uses(template(spec), {}, REGISTERED, {})
    assert problems == []
    assert [(u.kind, u.label, u.reference) for u in uses] == [
        ("sourceUri", 'storage URI of container "dataset-initializer"', HF)
    ]
    approved = index(entry("corpus", sources=[HF]))
    assert approval.judge_use(uses[0], approved, ENFORCE).finding is None
    assert approval.verifier_patch(
        template(spec), [approval.judge_use(uses[0], approved, ENFORCE)], IMAGE
    ) == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {
                datasetregistry.DATASETS_ANNOTATION: datasetregistry.encode_datasets_annotation(
                    approved.datasets.values()
                )
            },
        },
        {
            "op": "add",
            "path": "/metadata/labels",
            "value": {datasetregistry.USES_DATASETS_LABEL: "true"},
        },
    ]
