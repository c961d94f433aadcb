"""What a Model was trained on, judged through the Datasets' lineage (models/rules/lineage.py)."""

from __future__ import annotations

from typing import Any

import pytest

from muster.datasets.rules import registry as datasetregistry
from muster.kernel import findings
from muster.models.rules import approval as modelgate
from muster.models.rules import lineage as modellineage
from muster.models.rules import registry as modelregistry

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
DATA = "sha256:" + "aa" * 32
OTHER = "sha256:" + "bb" * 32


def dataset(name: str, *parents: str, verified: bool = False, **spec: Any) -> Any:
    fields: dict[str, Any] = {"digest": DATA, **spec}
    if parents:
        fields["lineage"] = {"parents": list(parents)}
    return datasetregistry.DatasetEntry(
        name, datasetregistry.DatasetSpec.model_validate(fields), signature_verified=verified
    )


def datasets(*entries: datasetregistry.DatasetEntry) -> datasetregistry.DatasetIndex:
    index = datasetregistry.DatasetIndex()
    for entry in entries:
        index.put_dataset(entry)
    return index


def model(*trained_on: dict[str, Any]) -> modelregistry.ModelEntry:
    spec = modelregistry.ModelSpec.model_validate({"digest": OMS, "datasets": list(trained_on)})
    return modelregistry.ModelEntry("llama-ft", spec)


def approved(entry: modelregistry.ModelEntry) -> modelgate.Match:
    use = modelgate.ModelUse("declaredVolume", "weights", entry.name)
    return modelgate.Match(use, entry, None)


LINEAGE = (
    dataset("crawl", revoked=True, revocationReason="holds personal data"),
    dataset("filtered", "crawl"),
    dataset("instructions", "filtered"),
    dataset("clean"),
)


def test_a_model_trained_on_a_revoked_dataset_is_refused_naming_model_dataset_and_reason() -> None:
    match = modellineage.judge_training(
        approved(model({"name": "crawl"})),
        datasets(*LINEAGE),
        modelregistry.ModelPolicySpec(),
        dataset_signature_required=False,
    )
    assert match.finding is not None
    assert match.finding.reason == "ModelTrainingDataRevoked"
    assert match.finding.subject == 'volume "weights"'
    assert match.finding.message.startswith(
        "Model 'llama-ft' was trained on Dataset 'crawl', which is revoked: holds personal data"
    )


def test_revocation_flows_down_the_lineage_to_every_descendant() -> None:
    match = modellineage.judge_training(
        approved(model({"name": "clean"}, {"name": "instructions"})),
        datasets(*LINEAGE),
        modelregistry.ModelPolicySpec(mode=findings.Mode.WARN),
        dataset_signature_required=False,
    )
    assert match.finding is not None
    assert match.finding.mode is findings.Mode.WARN
    assert (
        "Dataset 'instructions', which is revoked through lineage: its ancestor 'crawl' is "
        "revoked: holds personal data" in match.finding.message
    )
    assert [
        (r.dataset, r.revoked)
        for r in modellineage.revocations(
            model({"name": "filtered"}, {"name": "clean"}, {"name": "instructions"}).spec,
            datasets(*LINEAGE),
        )
    ] == [("filtered", "crawl"), ("instructions", "crawl")]


def test_revocation_is_judged_without_require_approved_datasets_and_unknown_names_pass() -> None:
    policy = modelregistry.ModelPolicySpec()
    assert not policy.require_approved_datasets
    for trained_on in ({"name": "clean"}, {"name": "free text, no Dataset"}):
        match = approved(model(trained_on))
        assert (
            modellineage.judge_training(
                match, datasets(*LINEAGE), policy, dataset_signature_required=False
            )
            is match
        )


def test_a_match_that_already_failed_or_matched_nothing_is_left_as_it_is() -> None:
    entry = model({"name": "crawl"})
    use = modelgate.ModelUse("declaredVolume", "weights", entry.name)
    failed = modelgate.Match(
        use, entry, findings.Finding("models", "ModelRevoked", "x", "revoked itself")
    )
    unmatched = modelgate.Match(use, None, None)
    for match in (failed, unmatched):
        assert (
            modellineage.judge_training(
                match,
                datasets(*LINEAGE),
                modelregistry.ModelPolicySpec(),
                dataset_signature_required=False,
            )
            is match
        )


STRICT = modelregistry.ModelPolicySpec(requireApprovedDatasets=True)


@pytest.mark.parametrize(
    ("entry", "index", "signatures", "wrong"),
    [
        (
            {"name": "scraped-forum"},
            datasets(*LINEAGE),
            False,
            "training dataset 'scraped-forum' names no registered Dataset",
        ),
        (
            {"name": "clean", "digest": OTHER},
            datasets(*LINEAGE),
            False,
            f"training dataset 'clean' gives digest {OTHER}, but Dataset 'clean' is {DATA}",
        ),
        (
            {"name": "child"},
            datasets(dataset("child", "missing-parent")),
            False,
            "training dataset 'child' has unresolved lineage: parent 'missing-parent' is not a "
            "registered Dataset",
        ),
        (
            {"name": "loop-a"},
            datasets(dataset("loop-a", "loop-b"), dataset("loop-b", "loop-a")),
            False,
            "training dataset 'loop-a' has unresolved lineage: lineage cycle: loop-a -> loop-b "
            "-> loop-a",
        ),
        (
            {"name": "clean"},
            datasets(*LINEAGE),
            True,
            "training dataset 'clean' names Dataset 'clean', which has no verified signature, "
            "and a DatasetPolicy selecting this namespace requires one",
        ),
    ],
    ids=["unregistered", "digest", "missing-parent", "cycle", "unsigned"],
)
def test_require_approved_datasets_names_the_entry_and_what_is_wrong(
    entry: dict[str, Any],
    index: datasetregistry.DatasetIndex,
    signatures: bool,
    wrong: str,
) -> None:
    match = modellineage.judge_training(
        approved(model(entry)), index, STRICT, dataset_signature_required=signatures
    )
    assert match.finding is not None
    assert match.finding.reason == "ModelTrainingDataNotApproved"
    assert "Model 'llama-ft' is trained on data that is not approved" in match.finding.message
    assert wrong in match.finding.message


def test_approved_training_data_passes_require_approved_datasets() -> None:
    index = datasets(*LINEAGE, dataset("signed", "clean", verified=True))
    match = approved(model({"name": "signed", "digest": DATA}, {"name": "clean"}))
    assert (
        modellineage.judge_training(match, index, STRICT, dataset_signature_required=False) is match
    )
    signed_only = approved(model({"name": "signed"}))
    assert (
        modellineage.judge_training(signed_only, index, STRICT, dataset_signature_required=True)
        is signed_only
    )


def test_an_invalid_dataset_is_named_with_why() -> None:
    index = datasets()
    index.invalid["Dataset/broken"] = "license: not an SPDX expression"
    problems = modellineage.approval_problems(
        model({"name": "broken"}).spec, index, signature_required=False
    )
    assert problems == [("broken", "is a Dataset Muster refuses (license: not an SPDX expression)")]


def test_effective_policy_requires_approved_datasets_and_declared_volumes_when_any_does() -> None:
    loose = modelregistry.ModelPolicySpec()
    strict = modelregistry.ModelPolicySpec(requireApprovedDatasets=True, volumes="declaredOnly")
    combined = modelgate.effective_policy([loose, strict])
    assert combined is not None
    assert combined.require_approved_datasets
    assert combined.volumes == "declaredOnly"
    alone = modelgate.effective_policy([loose])
    assert alone is not None
    assert (alone.require_approved_datasets, alone.volumes) == (False, "declared")


def test_signatures_are_required_when_any_dataset_policy_selecting_requires_them() -> None:
    loose = datasetregistry.DatasetPolicySpec()
    signed = datasetregistry.DatasetPolicySpec(requireSignature=True)
    assert not modellineage.signatures_required([loose])
    assert modellineage.signatures_required([loose, signed])


def test_trained_on_finds_the_models_naming_any_of_the_datasets() -> None:
    a = model({"name": "filtered"}, {"name": "clean"})
    b = modelregistry.ModelEntry(
        "other", modelregistry.ModelSpec.model_validate({"digest": OMS, "datasets": []})
    )
    assert modellineage.trained_on({"a": a, "b": b}, {"filtered", "crawl"}) == {"a": ["filtered"]}
