"""Every workload kind Muster claims finds its images where the published API puts them,
including those outside any whole pod template: a TrainJob's trainer image, overrides and
runtime patches in all three shapes Kubeflow Trainer has shipped, a RayCluster's autoscaler."""

from __future__ import annotations

import re
from typing import Any

import pytest

from muster.app import webhookconfigs
from muster.gpu.rules import pods as gpupods
from muster.kernel import findings, reviews, subjects
from tests import paths, workloadkinds
from tests.unit.admission import test_admission
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

PINNED = "ghcr.io/org/filler@sha256:" + "b" * 64
TAG = "registry.example/team/app:v1"


def _review(kind: workloadkinds.WorkloadKind, obj: dict[str, Any]) -> reviews.Review:
    return reviews.validate(
        review(
            kind={"group": kind.group, "version": kind.version, "kind": kind.kind},
            resource={"group": kind.group, "version": kind.version, "resource": kind.plural},
            object=obj,
        )
    )


def _subject(kind: workloadkinds.WorkloadKind, obj: dict[str, Any]) -> subjects.Subject:
    subject = subjects.from_review(
        _review(kind, obj), mode=findings.Mode.ENFORCE, own_namespace=None
    )
    assert subject is not None
    return subject


def _judge(kind: workloadkinds.WorkloadKind, obj: dict[str, Any]) -> reviews.ResponsePayload:
    return test_admission.judge(_review(kind, obj))


def _uses(subject: subjects.Subject) -> list[tuple[str, object]]:
    return [(use.pointer, use.image) for t in subject.templates for use in t.image_uses()]


TRAINJOB = next(k for k in workloadkinds.KINDS if k.label == "TrainJob (trainer image)")


def test_every_judged_resource_is_among_the_proven_kinds() -> None:
    judged = set(subjects.DEFAULT_TEMPLATE_PATHS) - {("", "pods")}
    assert {(kind.group, kind.plural) for kind in workloadkinds.KINDS} == judged


def test_the_readme_names_exactly_the_proven_kinds() -> None:
    text = " ".join((paths.REPO / "README.md").read_text(encoding="utf-8").split())
    listed = re.search(r"the pod templates of workloads \(([^)]*)\) are judged", text)
    assert listed is not None, "README.md no longer lists the judged workload kinds"
    named = {name.strip().removesuffix("s") for name in listed[1].split(",")}
    assert named == {kind.kind for kind in workloadkinds.KINDS}


def test_the_webhooks_ask_for_trainer_kubeflow_org_not_the_old_group() -> None:
    rules = webhookconfigs.validating("https://h:1", "Q0E=", own_namespace="m")["webhooks"][0]
    by_group = {rule["apiGroups"][0]: rule["resources"] for rule in rules["rules"]}
    assert by_group["trainer.kubeflow.org"] == ["trainingruntimes", "trainjobs"]
    assert by_group["kubeflow.org"] == ["mpijobs", "pytorchjobs", "tfjobs"]


@pytest.mark.parametrize("kind", workloadkinds.KINDS, ids=lambda k: k.label)
def test_the_image_is_found_where_the_api_puts_it(kind: workloadkinds.WorkloadKind) -> None:
    obj = kind.object("w", TAG, PINNED)
    assert workloadkinds.resolve(obj, kind.pointer) == TAG  # a patch there replaces it
    assert (kind.pointer, TAG) in _uses(_subject(kind, obj))
    response = _judge(kind, obj)
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        f"muster: {kind.subject}: image '{TAG}' is not pinned by digest; "
        f"refer to it as {TAG}@sha256:<digest> (crane digest {TAG} prints it) [ImageNotPinned]"
    )


def _trainjob(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "tune"},
        "spec": {"runtimeRef": {"name": "torch-distributed"}, **spec},
    }


_IMAGE_VOLUME = {"name": "weights", "image": {"reference": TAG}}
_CONTAINER_OVERRIDE = {"name": "node", "env": [{"name": "A", "value": "1"}]}


@pytest.mark.parametrize(
    ("spec", "pointer"),
    [
        # Trainer 2.1: podTemplateOverrides, each with metadata and spec
        (
            {
                "podTemplateOverrides": [
                    {
                        "targetJobs": [{"name": "node"}],
                        "metadata": {"labels": {"team": "a"}},
                        "spec": {
                            "volumes": [_IMAGE_VOLUME],
                            "initContainers": [_CONTAINER_OVERRIDE],
                            "containers": [_CONTAINER_OVERRIDE],
                        },
                    }
                ]
            },
            "/spec/podTemplateOverrides/0/spec/volumes/0/image/reference",
        ),
        # Trainer 2.0: podSpecOverrides, the pod spec's own fields beside targetJobs
        (
            {
                "podSpecOverrides": [
                    {
                        "targetJobs": [{"name": "node"}],
                        "volumes": [_IMAGE_VOLUME],
                        "containers": [_CONTAINER_OVERRIDE],
                    }
                ]
            },
            "/spec/podSpecOverrides/0/volumes/0/image/reference",
        ),
    ],
    ids=["podTemplateOverrides", "podSpecOverrides"],
)
def test_older_trainjob_overrides_are_judged_too(spec: dict[str, Any], pointer: str) -> None:
    obj = _trainjob(**spec)
    subject = _subject(TRAINJOB, obj)
    assert all(template.partial for template in subject.templates)
    assert _uses(subject) == [(pointer, TAG)]  # the overrides' containers name no image
    message = _judge(TRAINJOB, obj)["status"]["message"]
    assert message.startswith(f"muster: image volume \"weights\": image '{TAG}' is not pinned")


def test_a_trainjob_that_names_no_image_is_admitted() -> None:
    """The runtime's images are judged with the runtime and on the pods, not here: a TrainJob
    that only overrides env, resources and a container's mounts has nothing of its own."""
    obj = _trainjob(
        trainer={"numNodes": 2, "env": [{"name": "EPOCHS", "value": "3"}]},
        runtimePatches=[{"manager": "x", "trainingRuntimeSpec": {}}],
        initializer={"model": {"storageUri": "hf://org/model"}},
    )
    assert _subject(TRAINJOB, obj).templates == ()
    assert _judge(TRAINJOB, obj)["allowed"] is True


@pytest.mark.parametrize("image", ["", 42])
def test_a_trainer_image_that_is_empty_or_odd_is_denied(image: object) -> None:
    response = _judge(TRAINJOB, _trainjob(trainer={"image": image}))
    assert response["allowed"] is False
    assert response["status"]["message"].startswith('muster: container "trainer": ')


def test_the_trainer_carries_its_env_and_resources_to_the_gpu_gate() -> None:
    gpus = {"limits": {"nvidia.com/gpu": "8"}}
    env = [{"name": "NCCL_DEBUG", "value": "INFO"}]
    obj = _trainjob(trainer={"image": PINNED, "env": env, "resourcesPerNode": gpus})
    (template,) = _subject(TRAINJOB, obj).templates
    assert template.partial and template.pointer == "/spec/trainer"
    assert template.spec == {
        "containers": [{"name": "trainer", "image": PINNED, "env": env, "resources": gpus}]
    }
    assert gpupods.gpu_request(template.spec) == ('container "trainer" requests nvidia.com/gpu',)
    assert [use.pointer for use in template.image_uses()] == ["/spec/trainer/image"]


def test_a_whole_template_without_containers_is_still_invalid() -> None:
    """Partial templates may lack containers; a workload's own pod template may not."""
    kind = next(k for k in workloadkinds.KINDS if k.label == "TrainingRuntime")
    obj = kind.object("w", TAG, PINNED)
    obj["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"] = {}
    assert "has no containers to judge" in _judge(kind, obj)["status"]["message"]
