"""The Event recorder against the real apiserver: series, fallbacks, bounded queue."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from muster.app import localoperator
from muster.kernel import crds, findings, gates, observations, subjects
from muster.platform import controlplane, events, kubeapi
from tests import kubeclients
from tests.apiwaits import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def kube(control_plane: controlplane.ControlPlane) -> AsyncIterator[kubeapi.KubeApi]:
    api = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
def namespace(control_plane: controlplane.ControlPlane) -> str:
    return kubeclients.namespace(control_plane, "events")


def notice(namespace: str, **changes: Any) -> observations.Notice:
    base = observations.Notice(
        target=observations.namespace_ref(namespace),
        delivery=observations.Delivery.NOW,
        type=observations.EventType.WARNING,
        reason="ImageNotPinned",
        action="Denied",
        note=f"Pod {namespace}/p: denied by muster: container \"c\": image 'x:1' is not pinned",
        namespace=namespace,
    )
    return dataclasses.replace(base, **changes)


async def listed(kube: kubeapi.KubeApi, namespace: str) -> list[dict[str, Any]]:
    found = await kube.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
    return [
        item
        for item in found.get("items", [])
        if item.get("reportingController") == events.REPORTING_CONTROLLER
    ]


async def test_identical_notices_become_one_event_series(
    kube: kubeapi.KubeApi, namespace: str
) -> None:
    outcomes: list[str] = []
    recorder = events.EventRecorder(
        kube,
        instance="muster-test-0",
        book=observations.SeriesBook(min_interval=0.2),
        outcome=outcomes.append,
    )
    recorder.start()
    try:
        for _ in range(5):
            assert recorder.submit(notice(namespace))

        async def folded() -> dict[str, Any] | None:
            found = await listed(kube, namespace)
            if len(found) == 1 and (found[0].get("series") or {}).get("count") == 5:
                return found[0]
            return None

        event = await eventually(folded, "one Event with series.count 5")
        assert event["reportingInstance"] == "muster-test-0"
        assert event["regarding"]["kind"] == "Namespace"
        assert event["regarding"]["uid"]
        assert event["series"]["lastObservedTime"] >= event["eventTime"]
        assert outcomes[0] == "created"
        assert set(outcomes[1:]) == {"updated"}
        assert len(outcomes) < 5  # coalesced: fewer writes than occurrences

        # The Event is deleted (or expired): the next occurrence starts a new one.
        await kube.delete(
            f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{event['metadata']['name']}"
        )
        recorder.submit(notice(namespace))

        async def recreated() -> list[dict[str, Any]]:
            return [
                e
                for e in await listed(kube, namespace)
                if e["metadata"]["name"] != event["metadata"]["name"]
            ]

        (fresh,) = await eventually(recreated, "a new Event after the old one was deleted")
        assert "series" not in fresh
    finally:
        await recorder.stop()


async def test_a_different_note_is_a_different_series(
    kube: kubeapi.KubeApi, namespace: str
) -> None:
    recorder = events.EventRecorder(kube)
    recorder.start()
    try:
        recorder.submit(notice(namespace))
        recorder.submit(notice(namespace, note="something else"))
        found = await eventually(lambda: _at_least(listed(kube, namespace), 2), "two Events")
        assert {e["note"] for e in found} == {notice(namespace).note, "something else"}
    finally:
        await recorder.stop()


async def _at_least(
    pending: Awaitable[list[dict[str, Any]]], count: int
) -> list[dict[str, Any]] | None:
    found = await pending
    return found if len(found) >= count else None


async def test_an_object_that_never_appears_is_reported_on_its_fallback(
    kube: kubeapi.KubeApi, namespace: str
) -> None:
    recorder = events.EventRecorder(kube, appear_delays=(0.05, 0.05))
    recorder.start()
    try:
        recorder.submit(
            notice(
                namespace,
                target=observations.ObjectRef("v1", "Pod", "never-created", namespace),
                delivery=observations.Delivery.WHEN_CREATED,
                fallback=observations.namespace_ref(namespace),
                action="Warned",
            )
        )
        (event,) = await eventually(lambda: listed(kube, namespace), "the fallback Event")
        assert event["regarding"]["kind"] == "Namespace"
        assert event["action"] == "Warned"
    finally:
        await recorder.stop()


async def test_an_existing_object_gets_the_event_with_its_uid(
    kube: kubeapi.KubeApi, namespace: str
) -> None:
    created = await kube.create(
        f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "subject"}}
    )
    recorder = events.EventRecorder(kube)
    recorder.start()
    try:
        recorder.submit(
            notice(
                namespace,
                target=observations.ObjectRef("v1", "ConfigMap", "subject", namespace),
                delivery=observations.Delivery.WHEN_CREATED,
            )
        )
        (event,) = await eventually(lambda: listed(kube, namespace), "the Event")
        assert event["regarding"]["uid"] == created["metadata"]["uid"]
    finally:
        await recorder.stop()


async def test_a_full_queue_drops_and_counts_instead_of_waiting(
    kube: kubeapi.KubeApi, namespace: str
) -> None:
    outcomes: list[str] = []
    recorder = events.EventRecorder(kube, queue_size=2, outcome=outcomes.append)
    # No worker running: submit must still return at once.
    started = time.perf_counter()
    accepted = [recorder.submit(notice(namespace)) for _ in range(4)]
    # Waiting for room would never end (no worker): any bound catches it, so a generous one.
    assert time.perf_counter() - started < 1.0
    assert accepted == [True, True, False, False]
    assert outcomes == ["dropped", "dropped"]
    await recorder.stop()


async def test_events_about_cluster_scoped_objects_live_in_default(
    kube: kubeapi.KubeApi, namespace: str
) -> None:
    role = await kube.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {"metadata": {"name": f"{namespace}-probe"}, "rules": []},
    )
    recorder = events.EventRecorder(kube)
    recorder.start()
    try:
        recorder.submit(
            notice(
                "",
                target=observations.ObjectRef(
                    "rbac.authorization.k8s.io/v1", "ClusterRole", f"{namespace}-probe"
                ),
                reason="GPUStackNonCompliant",
                type=observations.EventType.NORMAL,
                note=f"probe {namespace}",
            )
        )

        async def found() -> list[dict[str, Any]]:
            return [e for e in await listed(kube, "default") if e["note"] == f"probe {namespace}"]

        (event,) = await eventually(found, "the Event in default")
        assert event["regarding"]["uid"] == role["metadata"]["uid"]
        assert event["type"] == "Normal"
    finally:
        await recorder.stop()
        await kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{namespace}-probe")


async def test_a_denied_bare_pod_is_reported_on_its_policy_and_its_namespace(
    control_plane: controlplane.ControlPlane, kube: kubeapi.KubeApi, namespace: str
) -> None:
    localoperator.install_crds(control_plane)
    name = f"{namespace}-models"
    policy = await kube.create(
        f"/apis/{crds.GROUP}/{crds.VERSION}/modelpolicies",
        {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": "ModelPolicy",
            "metadata": {"name": name},
            "spec": {},
        },
    )
    bare = subjects.Subject(
        uid="u1",
        api_version="admission.k8s.io/v1",
        operation="CREATE",
        group="",
        resource="pods",
        subresource="",
        kind="Pod",
        namespace=namespace,
        name="trainer",
        object={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer"}},
        templates=(),
        user={"username": "alice"},
        mode=findings.Mode.ENFORCE,
        dry_run=False,
    )
    unapproved = findings.Finding(
        check="models",
        reason="ModelNotApproved",
        subject='volume "weights"',
        message="Model 'llama' is not registered; only approved Models may be mounted here",
        policy=findings.PolicyRef(kind="ModelPolicy", name=name),
    )
    recorder = events.EventRecorder(kube)
    recorder.start()
    try:
        planned = observations.notices(
            bare, gates.Phase.VALIDATE, findings.Verdict(denials=(unapproved,))
        )
        assert [n.target.kind for n in planned] == ["Namespace", "ModelPolicy"]
        for each in planned:
            assert recorder.submit(each)

        async def on_policy() -> list[dict[str, Any]]:
            return [
                e
                for e in await listed(kube, "default")
                if e["regarding"]["kind"] == "ModelPolicy" and e["regarding"]["name"] == name
            ]

        (event,) = await eventually(on_policy, "the Event on the ModelPolicy, in default")
        assert event["regarding"]["uid"] == policy["metadata"]["uid"]
        assert event["regarding"]["apiVersion"] == f"{crds.GROUP}/{crds.VERSION}"
        assert "namespace" not in event["regarding"]  # cluster-scoped
        assert (event["reason"], event["action"]) == ("ModelNotApproved", "Denied")
        assert event["note"].startswith(f"Pod {namespace}/trainer: denied by muster: volume")
        (kept,) = await eventually(lambda: listed(kube, namespace), "the Namespace's Event")
        assert kept["regarding"]["kind"] == "Namespace"
        assert kept["reason"] == "ModelNotApproved"
        # kubectl finds it the way the platform team looks: on the policy itself.
        described = controlplane.kubectl(control_plane, "describe", "modelpolicy", name).stdout
        assert "ModelNotApproved" in described, described
    finally:
        await recorder.stop()
        await kube.delete(f"/apis/{crds.GROUP}/{crds.VERSION}/modelpolicies/{name}")
