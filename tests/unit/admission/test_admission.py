from __future__ import annotations

from typing import Any

import pytest

from muster.core import admission, findings, reviews, webhookconfigs
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

ENFORCE = findings.Mode.ENFORCE
PINNED = "ghcr.io/org/app@sha256:" + "a" * 64


def pod_review(spec: dict[str, Any], **overrides: Any) -> reviews.Review:
    return reviews.validate(review(object={"metadata": {"name": "p"}, "spec": spec}, **overrides))


def judge(data: reviews.Review, mode: findings.Mode = ENFORCE) -> reviews.ResponsePayload:
    return admission.validate(data, mode=mode, own_namespace="muster-system")["response"]


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
        "refer to it as a:1@sha256:<digest>"
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
    response = admission.mutate(data, mode=ENFORCE, own_namespace=None)["response"]
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
