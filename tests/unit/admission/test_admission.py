from __future__ import annotations

import asyncio
from typing import Any

import pytest

from muster.admission import pipeline as admissions
from muster.app import webhookconfigs
from muster.images.rules import pinning
from muster.kernel import findings, gates, reviews, subjects
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

ENFORCE = findings.Mode.ENFORCE
PINNED = "ghcr.io/org/app@sha256:" + "a" * 64


def pod_review(spec: dict[str, Any], **overrides: Any) -> reviews.Review:
    return reviews.validate(review(object={"metadata": {"name": "p"}, "spec": spec}, **overrides))


def pipeline(*active: gates.Gate, deadline: float = 1.0) -> admissions.Pipeline:
    return admissions.Pipeline(
        active_gates=active or (pinning.PinningGate(),),
        own_namespace="muster-system",
        deadline=deadline,
    )


def judge(
    data: reviews.Review,
    mode: findings.Mode = ENFORCE,
    phase: gates.Phase = gates.Phase.VALIDATE,
    using: admissions.Pipeline | None = None,
) -> reviews.ResponsePayload:
    runner = using or pipeline()
    return asyncio.run(runner.review(data, phase, mode))["response"]


def test_pinned_pod_is_allowed() -> None:
    spec = {
        "containers": [{"name": "a", "image": PINNED}],
        "volumes": [{"name": "m", "image": {"reference": PINNED}}],
    }
    assert judge(pod_review(spec))["allowed"] is True


def test_every_kind_of_image_use_is_checked() -> None:
    spec = {
        "initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [{"name": "main", "image": PINNED}, {"name": "side", "image": "a:1"}],
        "ephemeralContainers": [{"name": "debug", "image": "debug:1"}],
        "volumes": [
            {"name": "model", "image": {"reference": "models/llm:v2"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    }
    response = judge(pod_review(spec))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert message.startswith("muster: 4 violations:")
    for subject in (
        'init container "init"',
        'container "side"',
        'ephemeral container "debug"',
        'image volume "model"',
    ):
        assert subject in message
    assert '"main"' not in message
    assert response["status"]["code"] == 403


def test_warn_mode_admits_with_warnings() -> None:
    response = judge(
        pod_review({"containers": [{"name": "a", "image": "a:1"}]}), findings.Mode.WARN
    )
    assert response["allowed"] is True
    assert response["warnings"] == [
        "muster: container \"a\": image 'a:1' is not pinned by digest; "
        "refer to it as a:1@sha256:<digest> (crane digest a:1 prints it) [ImageNotPinned]"
    ]


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "muster-system"])
def test_system_namespaces_are_never_judged(namespace: str) -> None:
    data = pod_review({"containers": [{"name": "a", "image": "a:1"}]}, namespace=namespace)
    assert judge(data)["allowed"] is True


@pytest.mark.parametrize("spec", [{}, {"containers": []}, {"containers": "x"}])
def test_a_pod_without_containers_is_denied(spec: dict[str, Any]) -> None:
    response = judge(pod_review(spec))
    assert response["allowed"] is False
    assert "no containers" in response["status"]["message"]


@pytest.mark.parametrize("image", [None, "", 42])
def test_missing_or_odd_images_are_denied(image: object) -> None:
    response = judge(pod_review({"containers": [{"name": "a", "image": image}]}))
    assert response["allowed"] is False
    assert 'container "a"' in response["status"]["message"]


def test_operations_and_resources_muster_does_not_judge_are_allowed() -> None:
    spec = {"containers": [{"name": "a", "image": "a:1"}]}
    delete = reviews.validate(review(operation="DELETE", oldObject={"spec": spec}, object=None))
    assert judge(delete)["allowed"] is True
    binding = pod_review(spec, subResource="binding")
    assert judge(binding)["allowed"] is True
    other = pod_review(spec, resource={"group": "apps", "version": "v1", "resource": "deployments"})
    assert judge(other)["allowed"] is True


def test_ephemeral_containers_subresource_is_judged() -> None:
    data = pod_review(
        {
            "containers": [{"name": "a", "image": PINNED}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}],
        },
        operation="UPDATE",
        subResource="ephemeralcontainers",
    )
    assert judge(data)["allowed"] is False


def test_mutation_never_denies() -> None:
    data = pod_review({"containers": [{"name": "a", "image": "a:1"}]})
    response = judge(data, phase=gates.Phase.MUTATE)
    assert response == {"uid": "abc", "allowed": True}


def test_webhook_configurations_exclude_system_and_own_namespace() -> None:
    config = webhookconfigs.validating("https://h:1", "Q0E=", own_namespace="muster-system")
    enforce, warn = config["webhooks"]
    assert enforce["failurePolicy"] == "Fail"
    assert warn["failurePolicy"] == "Ignore"
    assert enforce["clientConfig"]["url"] == "https://h:1/validate/enforce"
    expressions = {e["key"]: e for e in enforce["namespaceSelector"]["matchExpressions"]}
    excluded = expressions["kubernetes.io/metadata.name"]
    assert excluded["operator"] == "NotIn"
    assert {"kube-system", "muster-system"} <= set(excluded["values"])
    assert expressions["muster.dev/ignore"]["operator"] == "NotIn"
    mutating = webhookconfigs.mutating("https://h:1", "Q0E=", own_namespace="muster-system")
    assert mutating["webhooks"][0]["clientConfig"]["url"] == "https://h:1/mutate/enforce"


def workload_review(group: str, resource: str, kind: str, obj: dict[str, Any]) -> reviews.Review:
    return reviews.validate(
        review(
            kind={"group": group, "version": "v1", "kind": kind},
            resource={"group": group, "version": "v1", "resource": resource},
            object=obj,
        )
    )


def template(*images: str) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": f"c{i}", "image": i_} for i, i_ in enumerate(images)]}}


@pytest.mark.parametrize(
    ("group", "resource", "kind", "obj", "pointer"),
    [
        (
            "apps",
            "deployments",
            "Deployment",
            {"spec": {"template": template("a:1")}},
            "/spec/template/spec/containers/0/image",
        ),
        (
            "batch",
            "cronjobs",
            "CronJob",
            {"spec": {"jobTemplate": {"spec": {"template": template("a:1")}}}},
            "/spec/jobTemplate/spec/template/spec/containers/0/image",
        ),
        (
            "kubeflow.org",
            "pytorchjobs",
            "PyTorchJob",
            {
                "spec": {
                    "pytorchReplicaSpecs": {
                        "Master": {"template": template(PINNED)},
                        "Worker": {"template": template("a:1")},
                    }
                }
            },
            "/spec/pytorchReplicaSpecs/Worker/template/spec/containers/0/image",
        ),
        (
            "ray.io",
            "rayjobs",
            "RayJob",
            {
                "spec": {
                    "rayClusterSpec": {
                        "headGroupSpec": {"template": template(PINNED)},
                        "workerGroupSpecs": [{"template": template("a:1")}],
                    }
                }
            },
            "/spec/rayClusterSpec/workerGroupSpecs/0/template/spec/containers/0/image",
        ),
    ],
)
def test_workload_templates_are_judged_like_pods(
    group: str, resource: str, kind: str, obj: dict[str, Any], pointer: str
) -> None:
    data = workload_review(group, resource, kind, obj)
    response = judge(data)
    assert response["allowed"] is False
    assert "image 'a:1' is not pinned" in response["status"]["message"]
    subject = subjects.from_review(data, mode=ENFORCE, own_namespace=None)
    assert subject is not None
    uses = [
        u for t in subject.templates for u in pinning.pods.image_uses(t.spec, pointer=t.pointer)
    ]
    assert pointer in [use.pointer for use in uses]


def test_unknown_resources_are_not_judged() -> None:
    data = workload_review(
        "example.com", "widgets", "Widget", {"spec": {"template": template("a")}}
    )
    assert subjects.from_review(data, mode=ENFORCE, own_namespace=None) is None
    assert judge(data)["allowed"] is True


class SlowGate:
    name = "slow"

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        await asyncio.sleep(10)
        return gates.GateResult()


class BrokenGate:
    name = "broken"

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        raise RuntimeError("bug")


def test_the_deadline_denies_in_enforce_and_warns_in_warn() -> None:
    data = pod_review({"containers": [{"name": "a", "image": PINNED}]})
    slow = pipeline(SlowGate(), deadline=0.05)
    response = judge(data, using=slow)
    assert response["allowed"] is False
    assert "no answer within 0.05s" in response["status"]["message"]
    warned = judge(data, findings.Mode.WARN, using=slow)
    assert warned["allowed"] is True
    assert "no answer within" in warned["warnings"][0]


def test_a_failing_gate_never_allows() -> None:
    data = pod_review({"containers": [{"name": "a", "image": PINNED}]})
    response = judge(data, using=pipeline(pinning.PinningGate(), BrokenGate()))
    assert response["allowed"] is False
    assert "internal error" in response["status"]["message"]
    assert "bug" not in response["status"]["message"]  # no internals leak to users


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.seen: list[tuple[str, bool]] = []
        self.fail = fail

    def decided(
        self,
        subject: subjects.Subject,
        phase: gates.Phase,
        verdict: findings.Verdict,
        durations: dict[str, float],
    ) -> None:
        self.seen.append((phase.value, verdict.allowed))
        assert set(durations) == {"digest-pinning"}
        if self.fail:
            raise RuntimeError("observer bug")


def test_observers_see_decisions_and_cannot_change_them() -> None:
    good, bad = Recorder(), Recorder(fail=True)
    runner = pipeline()
    runner.observers.extend([bad, good])
    data = pod_review({"containers": [{"name": "a", "image": "a:1"}]})
    assert judge(data, using=runner)["allowed"] is False
    assert good.seen == bad.seen == [("validate", False)]


@pytest.mark.parametrize(
    "where",
    [
        {"subResource": "binding"},
        {"resource": {"group": "", "version": "v1", "resource": "bindings"}},
    ],
)
def test_bindings_reach_gates_as_pod_bindings_without_templates(where: dict[str, Any]) -> None:
    binding = {"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n"}}
    data = reviews.validate(review(object=binding, name="p", **where))
    subject = subjects.from_review(data, mode=ENFORCE, own_namespace="muster-system")
    assert subject is not None
    assert (subject.resource, subject.subresource, subject.name) == ("pods", "binding", "p")
    assert subject.is_pod and subject.templates == ()
