"""Which TrainJob downloads a Kubeflow Trainer pod reads, on the layout Trainer v2.3.0 ships
(its torchtune-llama3.2-1b ClusterTrainingRuntime), and the verifier for a sub-directory."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from muster.kernel import subjects, trainerpods
from muster.signatures.rules import verifiers
from tests import paths

pytestmark = pytest.mark.unit

DATASET = "hf://datasets/tatsu-lab/alpaca@0123456789abcdef0123456789abcdef01234567"
MODEL = "hf://meta-llama/Llama-3.2-1B-Instruct@89abcdef0123456789abcdef0123456789abcdef"
TRAINJOB = {
    "spec": {"initializer": {"dataset": {"storageUri": DATASET}, "model": {"storageUri": MODEL}}}
}


def _runtime() -> dict[str, Any]:
    path = paths.fixture("crds", "kubeflow-trainer-v2.3.0", "runtimes", "llama3_2_1B.yaml")
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _pod(job: str) -> subjects.PodTemplate:
    """The pod spec of replicated job ``job``, with the runtime's PVC template as its volume
    (JobSet names the claim <template>-<jobset>)."""
    jobs = {j["name"]: j for j in _runtime()["spec"]["template"]["spec"]["replicatedJobs"]}
    spec = copy.deepcopy(jobs[job]["template"]["spec"]["template"]["spec"])
    spec["volumes"] = [
        {"name": "initializer", "persistentVolumeClaim": {"claimName": "initializer-tune"}}
    ]
    metadata = {"labels": {trainerpods.JOBSET_NAME_LABEL: "tune"}}
    return subjects.PodTemplate(pointer="/spec", spec=spec, metadata=metadata)


def test_the_node_pod_reads_both_downloads_below_the_initializer_volume() -> None:
    found = trainerpods.downloads("tune", TRAINJOB, _pod("node"))
    assert [(d.part, d.uri, d.volume, d.sub_path) for d in found] == [
        ("dataset", DATASET, "initializer", "dataset"),
        ("model", MODEL, "initializer", "model"),
    ]


def _with_uri(pod: subjects.PodTemplate, uri: str | None) -> subjects.PodTemplate:
    """The initializer container's STORAGE_URI as Trainer's JobSet builder sets it (None: left
    as the runtime has it, which is not the TrainJob's)."""
    if uri is not None:
        pod.spec["containers"][0]["env"] = [{"name": "STORAGE_URI", "value": uri}]
    return pod


def test_the_initializer_pods_are_download_steps_and_read_nothing_yet() -> None:
    # They run side by side: the dataset initializer must not wait for the model's bytes.
    assert (
        trainerpods.downloads("tune", TRAINJOB, _with_uri(_pod("dataset-initializer"), DATASET))
        == []
    )
    assert (
        trainerpods.downloads("tune", TRAINJOB, _with_uri(_pod("model-initializer"), MODEL)) == []
    )


def test_a_container_only_named_as_an_initializer_exempts_nothing() -> None:
    # The runtime's own URI (hf://tatsu-lab/alpaca) is not this TrainJob's: not its download.
    named = trainerpods.downloads("tune", TRAINJOB, _with_uri(_pod("dataset-initializer"), None))
    assert [d.part for d in named] == ["dataset", "model"]
    other = _with_uri(_pod("model-initializer"), "hf://acme/other@" + "0" * 40)
    assert [d.part for d in trainerpods.downloads("tune", TRAINJOB, other)] == ["dataset", "model"]


def test_the_deepest_mount_decides_and_a_mount_sub_path_is_kept() -> None:
    pod = _pod("node")
    mounts = pod.spec["containers"][0]["volumeMounts"]
    mounts.append({"name": "data", "mountPath": "/workspace/dataset", "subPath": "corpora/v1"})
    pod.spec["volumes"].append({"name": "data", "emptyDir": {}})
    found = {d.part: (d.volume, d.sub_path) for d in trainerpods.downloads("tune", TRAINJOB, pod)}
    assert found == {"dataset": ("data", "corpora/v1"), "model": ("initializer", "model")}


def test_nothing_mounted_at_the_paths_or_no_downloaded_scheme_reads_nothing() -> None:
    pod = _pod("node")
    pod.spec["containers"][0]["volumeMounts"] = [{"name": "initializer", "mountPath": "/out"}]
    assert trainerpods.downloads("tune", TRAINJOB, pod) == []
    pvc_source = {"spec": {"initializer": {"model": {"storageUri": "pvc://weights/llama"}}}}
    assert trainerpods.downloads("tune", pvc_source, _pod("node")) == []


def test_the_trainjob_name_comes_from_the_jobset_label_and_must_be_a_name() -> None:
    assert trainerpods.trainjob_name({"labels": {trainerpods.JOBSET_NAME_LABEL: "tune"}}) == "tune"
    assert trainerpods.trainjob_name({"labels": {}}) is None
    # Labels reach a mutating webhook before the apiserver validates them.
    forged = {"labels": {trainerpods.JOBSET_NAME_LABEL: "../../secrets/x"}}
    assert trainerpods.trainjob_name(forged) is None


def test_a_sub_path_verifier_mounts_that_directory_read_only_under_its_own_name() -> None:
    digest = "sha256:" + "ab" * 32
    whole = verifiers.verifier_container("initializer", digest, "img")
    part = verifiers.verifier_container("initializer", digest, "img", sub_path="dataset")
    assert part["name"] == "muster-verify-initializer-dataset" != whole["name"]
    assert part["volumeMounts"] == [
        {
            "name": "initializer",
            "mountPath": "/models/initializer-dataset",
            "readOnly": True,
            "subPath": "dataset",
        }
    ]
    assert part["args"][:3] == ["model", "verify", "/models/initializer-dataset"]
    odd = verifiers.verifier_container("Vol", digest, "img", sub_path="a/B")
    other = verifiers.verifier_container("Vol", digest, "img", sub_path="a-b")
    assert odd["name"] != other["name"]
    assert odd["volumeMounts"][0]["subPath"] == "a/B"
