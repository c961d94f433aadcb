"""Break-glass exemptions through the real apiserver: the user the apiserver authenticated
(here by impersonation) decides, not anything the request body claims."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from muster.app import localoperator
from muster.images.rules import pinning
from muster.kernel import exemptions
from muster.platform import controlplane
from tests import kubeclients
from tests.e2e.security.conftest import BREAKGLASS, SELECT_LABEL

pytestmark = pytest.mark.e2e

UNPINNED = "registry.example/team/trainer:v1"


@pytest.fixture
def namespace(
    control_plane: controlplane.ControlPlane, security_operator: localoperator.LocalOperator
) -> str:
    name = kubeclients.namespace(control_plane, "exempt", {SELECT_LABEL: "enforce"})
    with kubeclients.admin(control_plane) as api:
        client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
            name,
            {
                "metadata": {"name": "editors"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "edit",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                    for user in ("oncall", "mallory")
                ],
            },
        )
    return name


def as_user(plane: controlplane.ControlPlane, user: str, *groups: str) -> client.ApiClient:
    api = kubeclients.admin(plane)
    api.set_default_header("Impersonate-User", user)
    if groups:
        # One group per request is all these tests need (the header may repeat).
        api.set_default_header("Impersonate-Group", groups[0])
    return api


def pod(reason: str | None) -> dict[str, Any]:
    body: dict[str, Any] = kubeclients.pod(f"p-{uuid.uuid4().hex[:6]}", UNPINNED)
    if reason is not None:
        body["metadata"]["annotations"] = {exemptions.ANNOTATION: reason}
    return body


def create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    return client.CoreV1Api(api).create_namespaced_pod(namespace, body)


def denial(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(client.ApiException) as raised:
        create(api, namespace, body)
    assert raised.value.status == 403, raised.value.body
    return str(json.loads(raised.value.body)["message"])


def exemption_events(plane: controlplane.ControlPlane, namespace: str) -> list[dict[str, Any]]:
    with kubeclients.admin(plane) as api:
        response = client.EventsV1Api(api).list_namespaced_event(namespace, _preload_content=False)
    return [e for e in json.loads(response.data)["items"] if e.get("reason") == "ExemptionUsed"]


def metric(operator: localoperator.LocalOperator, namespace: str, check: str) -> float:
    """``muster_exemptions_used_total`` of one waived check in ``namespace``."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "muster_exemptions_used_total"
                and sample.labels.get("resource_namespace") == namespace
                and sample.labels.get("check") == check
            ):
                total += sample.value
    return total


def eventually(probe: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return found


@pytest.fixture
def users(control_plane: controlplane.ControlPlane) -> Iterator[dict[str, client.ApiClient]]:
    clients = {
        "oncall": as_user(control_plane, "oncall", BREAKGLASS),
        "mallory": as_user(control_plane, "mallory", "developers"),
    }
    yield clients
    for api in clients.values():
        api.close()


def test_exemptions_need_the_group_and_a_reason_and_are_audited(
    control_plane: controlplane.ControlPlane,
    security_operator: localoperator.LocalOperator,
    namespace: str,
    users: dict[str, client.ApiClient],
) -> None:
    oncall, mallory = users["oncall"], users["mallory"]
    # Without an exemption the unpinned image is denied, for everyone.
    assert "not pinned by digest" in denial(oncall, namespace, pod(None))
    # A user outside the exemption group: the exemption itself is a denial.
    message = denial(mallory, namespace, pod("INC-1 I really need this"))
    assert "mallory is not in an exemption group (muster-breakglass)" in message
    # A reason is required even from the group.
    assert "gives no reason" in denial(oncall, namespace, pod("  "))
    # The on-call engineer with a reason: admitted with a warning, an Event and a metric.
    body = pod("INC-2 registry outage")
    created = create(oncall, namespace, body)
    assert created.metadata.name == body["metadata"]["name"]
    # The Event is written asynchronously: awaited, then read whole. The metric, counted as
    # each request is answered, says one exemption was honoured, not the refused ones.
    eventually(lambda: exemption_events(control_plane, namespace), "the ExemptionUsed Event")
    assert (
        eventually(lambda: metric(security_operator, namespace, pinning.CHECK), "the metric") == 1.0
    )
    [event] = exemption_events(control_plane, namespace)
    assert event["type"] == "Warning"
    assert event["reason"] == "ExemptionUsed"
    assert event["action"] == "Warned"
    assert event["reportingController"] == "muster.dev/operator"
    assert event["regarding"]["kind"] == "Pod"
    assert event["regarding"]["namespace"] == namespace
    assert event["regarding"]["name"] == body["metadata"]["name"]
    assert f"exemption used by oncall (groups: {BREAKGLASS})" in event["note"]
    assert "reason: INC-2 registry outage" in event["note"]
    assert "not pinned by digest" in event["note"]
    assert "mallory" not in event["note"]
