"""Events from real admissions: real apiserver, the session's real ``muster run``.

Events are read back through the apiserver (``events.k8s.io/v1``). Metrics, the dashboard and
the alerts are checked against a real Prometheus in ``tests/e2e/observability``, whose operator
runs every gate against a real registry (this session operator never contacts one).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.images.rules import policies as imagepolicies
from muster.kernel import scopes
from muster.platform import controlplane
from tests import kubeclients

pytestmark = pytest.mark.e2e

UNPINNED = "registry.example/team/trainer:v1"
PINNED = "registry.example/team/trainer@sha256:" + "ab" * 32
# The Events of digest pinning are what these tests read: no ImagePolicy covers their image,
# which their namespaces allow explicitly (tests/e2e/images/test_uncovered.py tests that rule).
ALLOW_UNCOVERED = {imagepolicies.UNCOVERED_LABEL: "allow"}
T = TypeVar("T")


def core(api: client.ApiClient) -> Any:
    """The core API, untyped: these tests pass plain dicts as bodies."""
    return client.CoreV1Api(api)


def apps(api: client.ApiClient) -> Any:
    return client.AppsV1Api(api)


def eventually(probe: Callable[[], T | None], *, what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Event:
    """An events.k8s.io/v1 Event read as JSON (the typed client rejects other controllers')."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.reason = raw.get("reason")
        self.type = raw.get("type")
        self.action = raw.get("action")
        self.note = raw.get("note") or ""
        self.reporting_instance = raw.get("reportingInstance")
        self.count = (raw.get("series") or {}).get("count", 1)
        regarding = raw.get("regarding") or {}
        self.kind = regarding.get("kind")
        self.name = regarding.get("name")
        self.uid = regarding.get("uid")


def muster_events(plane: controlplane.ControlPlane, namespace: str) -> list[Event]:
    with kubeclients.admin(plane) as api:
        events_api: Any = client.EventsV1Api(api)
        response = events_api.list_namespaced_event(namespace, _preload_content=False)
        items = json.loads(response.data)["items"]
    return [Event(e) for e in items if e.get("reportingController") == "muster.dev/operator"]


def denied(plane: controlplane.ControlPlane, create: Callable[[client.ApiClient], object]) -> None:
    with kubeclients.admin(plane) as api, pytest.raises(client.ApiException) as raised:
        create(api)
    assert raised.value.status == 403, raised.value.body


def deployment(name: str, image: str, *, paused: bool = False, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "paused": paused,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "trainer", "image": image}]},
            },
        },
    }


@pytest.fixture(scope="module")
def enforced(control_plane: controlplane.ControlPlane) -> str:
    return kubeclients.namespace(
        control_plane, "obs-enforce", {scopes.ENFORCE_LABEL: "true", **ALLOW_UNCOVERED}
    )


def test_repeated_denials_fold_into_one_event_series_on_the_namespace(
    control_plane: controlplane.ControlPlane,
    muster_operator: localoperator.LocalOperator,
    enforced: str,
) -> None:
    for _ in range(3):
        denied(
            control_plane,
            lambda api: core(api).create_namespaced_pod(
                enforced, kubeclients.pod("loner", UNPINNED)
            ),
        )

    def folded() -> Any:
        found = [
            e
            for e in muster_events(control_plane, enforced)
            if e.kind == "Namespace" and "loner" in e.note
        ]
        if len(found) == 1 and found[0].count == 3:
            return found[0]
        return None

    event = eventually(folded, what="one Event with series.count 3")
    assert event.reason == "ImageNotPinned"
    assert event.type == "Warning"
    assert event.action == "Denied"
    assert event.name == enforced
    assert event.uid  # the real Namespace
    assert event.reporting_instance
    assert f"Pod {enforced}/loner: denied by muster" in event.note
    assert UNPINNED in event.note


def test_a_denied_pod_is_reported_on_its_deployment(
    control_plane: controlplane.ControlPlane,
    muster_operator: localoperator.LocalOperator,
    enforced: str,
) -> None:
    with kubeclients.admin(control_plane) as api:
        workloads = apps(api)
        # A paused Deployment with no replicas: the controllers leave the hand-made ReplicaSet be.
        owner = workloads.create_namespaced_deployment(
            enforced, deployment("owner", PINNED, paused=True, replicas=0)
        )
        replica_set = workloads.create_namespaced_replica_set(
            enforced,
            {
                "metadata": {
                    "name": "owner-rs",
                    "labels": {"app": "owner"},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": "owner",
                            "uid": owner.metadata.uid,
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "owner"}},
                    "template": deployment("owner", PINNED)["spec"]["template"],
                },
            },
        )
    body = kubeclients.pod("owned", UNPINNED)
    body["metadata"] = {
        "name": "owned",
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "owner-rs",
                "uid": replica_set.metadata.uid,
                "controller": True,
            }
        ],
    }
    denied(control_plane, lambda api: core(api).create_namespaced_pod(enforced, body))
    event = eventually(
        lambda: next(
            (e for e in muster_events(control_plane, enforced) if "owned" in e.note),
            None,
        ),
        what="an Event about the denied pod",
    )
    assert (event.kind, event.name) == ("Deployment", "owner")
    assert event.uid == owner.metadata.uid
    assert event.reason == "ImageNotPinned"


def test_a_denied_workload_is_reported_on_the_namespace(
    control_plane: controlplane.ControlPlane,
    muster_operator: localoperator.LocalOperator,
    enforced: str,
) -> None:
    denied(
        control_plane,
        lambda api: apps(api).create_namespaced_deployment(
            enforced, deployment("rejected", UNPINNED)
        ),
    )
    event = eventually(
        lambda: next(
            (e for e in muster_events(control_plane, enforced) if "rejected" in e.note),
            None,
        ),
        what="an Event about the denied Deployment",
    )
    assert event.kind == "Namespace"
    assert f"Deployment {enforced}/rejected" in event.note


def test_warnings_are_reported_on_the_objects_once_they_exist(
    control_plane: controlplane.ControlPlane,
    muster_operator: localoperator.LocalOperator,
) -> None:
    namespace = kubeclients.namespace(
        control_plane, "obs-warn", {scopes.ENFORCE_LABEL: "warn", **ALLOW_UNCOVERED}
    )
    with kubeclients.admin(control_plane) as api:
        apps(api).create_namespaced_deployment(namespace, deployment("warned", UNPINNED))

    def on(kind: str) -> Any:
        return next(
            (e for e in muster_events(control_plane, namespace) if e.kind == kind),
            None,
        )

    for kind in ("Deployment", "ReplicaSet"):
        event = eventually(functools.partial(on, kind), what=f"a warning Event on the {kind}")
        assert event.action == "Warned"
        assert event.reason == "ImageNotPinned"
        assert event.uid
    # The ReplicaSet controller creates the pod with generateName: the Event finds it by name.
    with kubeclients.admin(control_plane) as api:
        pods = eventually(
            lambda: core(api).list_namespaced_pod(namespace).items,
            what="the Deployment's pod",
        )
    event = eventually(lambda: on("Pod"), what="a warning Event on the Pod")
    assert event.name == pods[0].metadata.name
    assert event.uid == pods[0].metadata.uid
    assert event.name.startswith("warned-")
