"""Models downloaded from hf://, s3://, gs://, http(s):// storage URIs: found where KServe and
Kubeflow Trainer name them, judged against the approved Models' spec.source, re-measured after
the storage-initializer."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from muster.kernel import subjects
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.models.rules import storageuris

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
IMAGE = "registry.example/muster@sha256:" + "44" * 32
URI = "hf://acme/tiny@0123456789abcdef0123456789abcdef01234567"
INTERNAL = "internal.serving.kserve.io/storage-initializer-sourceuri"


def kserve_pod(uri: str = URI, *, initializer: bool = True) -> subjects.PodTemplate:
    """A pod as KServe's controller and pod webhook make it for an InferenceService."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "kserve-container",
                "image": "kserve/huggingfaceserver:v0.15.2",
                "args": ["--model_dir=/mnt/models"],
                "volumeMounts": [
                    {
                        "name": "kserve-provision-location",
                        "mountPath": "/mnt/models",
                        "readOnly": True,
                    }
                ],
            }
        ],
        "volumes": [{"name": "kserve-provision-location", "emptyDir": {}}],
    }
    if initializer:
        spec["initContainers"] = [
            {
                "name": "storage-initializer",
                "image": "kserve/storage-initializer:v0.15.2",
                "args": [uri, "/mnt/models"],
                "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"}],
            }
        ]
    metadata = {"name": "p", "annotations": {INTERNAL: uri}}
    return subjects.PodTemplate(pointer="/spec", spec=spec, metadata=metadata)


def index(**sources: str) -> modelregistry.Index:
    found = modelregistry.Index()
    for name, source in sources.items():
        found.put_model(
            modelregistry.ModelEntry(
                name, modelregistry.ModelSpec.model_validate({"digest": OMS, "source": source})
            )
        )
    return found


POLICY = modelregistry.ModelPolicySpec()


def test_the_annotation_and_initializer_args_are_one_download_into_the_provision_volume() -> None:
    uses, problems = modelgate.model_uses(kserve_pod("hf://acme/tiny:main"), {})
    assert problems == []
    assert [(u.kind, u.reference, u.volume, u.needs_verifier) for u in uses] == [
        ("sourceUri", "hf://acme/tiny@main", "kserve-provision-location", True)
    ]
    assert uses[0].label == "model source 'hf://acme/tiny@main' (container \"storage-initializer\")"


def test_an_unapproved_source_is_denied_naming_the_uri() -> None:
    uses, _ = modelgate.model_uses(kserve_pod(), {})
    match = modelgate.judge_use(uses[0], index(other="hf://acme/other@v1"), POLICY)
    assert match.finding is not None
    assert match.finding.reason == "ModelNotApproved"
    assert URI in match.finding.message
    # the same repository at another revision is another model
    other_rev = index(tiny="hf://acme/tiny@ffffffffffffffffffffffffffffffffffffffff")
    assert modelgate.judge_use(uses[0], other_rev, POLICY).finding is not None


def test_an_unpinned_hf_source_is_refused_even_when_a_model_names_it() -> None:
    uses, _ = modelgate.model_uses(kserve_pod("hf://acme/tiny"), {})
    match = modelgate.judge_use(uses[0], index(tiny="hf://acme/tiny"), POLICY)
    assert match.finding is not None
    assert match.finding.reason == "ModelSourceNotPinned"
    assert "hf://acme/tiny@<commit>" in match.finding.message


def test_a_malformed_source_is_an_invalid_reference() -> None:
    uses, _ = modelgate.model_uses(kserve_pod("hf://a/b/c/d@v1"), {})
    match = modelgate.judge_use(uses[0], index(tiny=URI), POLICY)
    assert match.finding is not None
    assert match.finding.reason == "ModelReferenceInvalid"
    assert "expected hf://org/name" in match.finding.message


def test_an_approved_source_gets_the_verifier_right_after_the_storage_initializer() -> None:
    pod = kserve_pod()
    uses, _ = modelgate.model_uses(pod, {})
    match = modelgate.judge_use(uses[0], index(tiny=URI), POLICY)
    assert match.finding is None and match.model is not None and match.model.name == "tiny"
    patch = modelgate.verifier_patch(pod, [match], IMAGE)
    added = [op for op in patch if op["path"].startswith("/spec/initContainers")]
    assert [op["path"] for op in added] == ["/spec/initContainers/1"]
    verifier = added[0]["value"]
    assert verifier["name"] == "muster-verify-kserve-provision-location"
    assert verifier["args"] == [
        "model",
        "verify",
        "/models/kserve-provision-location",
        "--digest",
        OMS,
    ]
    assert verifier["volumeMounts"] == [
        {
            "name": "kserve-provision-location",
            "mountPath": "/models/kserve-provision-location",
            "readOnly": True,
        }
    ]


@pytest.mark.parametrize(
    ("approved", "used"),
    [
        ("s3://models/llama/v1", "s3://models/llama/v1/"),
        ("gs://models/llama", "gs://models/llama"),
        ("https://example.com/m.tar.gz", "HTTPS://EXAMPLE.COM:443/m.tar.gz"),
    ],
)
def test_other_downloaded_schemes_match_by_canonical_text(approved: str, used: str) -> None:
    uses, _ = modelgate.model_uses(kserve_pod(used), {})
    assert modelgate.judge_use(uses[0], index(m=approved), POLICY).finding is None


def test_without_a_storage_initializer_there_is_no_volume_to_verify() -> None:
    uses, _ = modelgate.model_uses(kserve_pod(initializer=False), {})
    assert [(u.volume, u.verifier_volume) for u in uses] == [(None, None)]
    match = modelgate.judge_use(uses[0], index(tiny=URI), POLICY)
    assert match.finding is None
    pod = kserve_pod(initializer=False)
    assert not [
        op for op in modelgate.verifier_patch(pod, [match], IMAGE) if "initContainers" in op["path"]
    ]


def test_a_download_into_a_subdirectory_of_a_volume_has_no_volume_to_verify() -> None:
    pod = kserve_pod()
    spec = copy.deepcopy(dict(pod.spec))
    spec["initContainers"][0]["args"] = [URI, "/mnt/models/sub"]
    uses, _ = modelgate.model_uses(subjects.PodTemplate("/spec", spec, {"name": "p"}), {})
    assert [u.volume for u in uses] == [None]


def test_trainer_initializers_the_dataset_one_is_not_a_model_the_model_one_is_the_download() -> (
    None
):
    spec = {
        "containers": [
            {
                "name": "dataset-initializer",
                "image": "x",
                "env": [{"name": "STORAGE_URI", "value": "s3://data/set"}],
            },
            {
                "name": "model-initializer",
                "image": "x",
                "env": [{"name": "STORAGE_URI", "value": URI}],
            },
        ]
    }
    refs = storageuris.source_refs({}, spec["containers"])
    assert [(r.uri, r.fetcher, r.volume) for r in refs] == [(URI, True, None)]
    uses, _ = modelgate.model_uses(subjects.PodTemplate("/spec", spec, {"name": "p"}), {})
    assert [(u.kind, u.needs_verifier) for u in uses] == [("sourceUri", False)]
