"""The operator's one pod watch against the real apiserver: listing, events, 410, labels."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
import pytest

from muster.platform import controlplane, kubeapi, podevents
from tests import kubeclients

pytestmark = pytest.mark.integration

Heard = list[tuple[str, str | None, Mapping[str, Any]]]


def plain_pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.example/a:1"}]},
    }


def hearing(namespace: str, heard: Heard) -> podevents.Listener:
    def listener(body: Mapping[str, Any], event_type: str | None) -> None:
        metadata = body["metadata"]
        if metadata["namespace"] == namespace:  # the control plane is shared
            heard.append((metadata["name"], event_type, body))

    return listener


def compact(plane: controlplane.ControlPlane) -> None:
    """Compact etcd's history up to now (through its JSON gateway)."""
    etcd = f"http://127.0.0.1:{plane.state.ports['etcd']}/v3/kv"
    key = base64.b64encode(b"/registry").decode()

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{etcd}/{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.load(response)
        return answer

    revision = post("range", {"key": key, "limit": 1})["header"]["revision"]
    post("compaction", {"revision": revision})


async def until(check: Any, seconds: float = 30.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - a list the watch fills, no event to wait on
            await asyncio.sleep(0.05)


async def test_listed_pods_then_every_event_arrive_without_managed_fields(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "podwatch")
    credentials = kubeapi.Credentials.resolve(str(control_plane.kubeconfig))
    api = kubeapi.KubeApi(credentials)
    pods = f"/api/v1/namespaces/{namespace}/pods"
    heard: Heard = []
    registry = kopf.OperatorRegistry()
    podevents.listen(registry, "test", hearing(namespace, heard))
    watch = podevents.serve(registry, credentials)
    assert watch is not None
    try:
        await api.create(pods, plain_pod("before"))
        watch.start()
        await asyncio.wait_for(watch.listed.wait(), 30)
        assert [(name, kind) for name, kind, _ in heard] == [("before", None)]
        assert heard[0][2]["kind"] == "Pod"  # list items get their kind back, as kopf gave it
        await api.create(pods, plain_pod("after"))
        await api.patch(f"{pods}/after", {"metadata": {"labels": {"x": "1"}}})
        await api.delete(f"{pods}/after")  # never scheduled: gone at once
        await until(lambda: any(kind == "DELETED" for _, kind, _ in heard))
        after = [(kind, body["metadata"].get("labels")) for name, kind, body in heard[1:]]
        # (the deletion may first show as a change setting deletionTimestamp)
        assert [kind for kind, _ in after][:2] == ["ADDED", "MODIFIED"]
        assert after[-1][0] == "DELETED"
        assert after[1][1] == {"x": "1"}
        assert all("managedFields" not in body["metadata"] for _, _, body in heard)
        assert watch.listings == 1
    finally:
        await watch.stop()
        await api.close()


async def test_an_expired_resource_version_lists_the_pods_again(tmp_path: Path) -> None:
    # A plane of its own: its apiserver is restarted.
    plane = controlplane.start(tmp_path / "plane", controllers=False)
    credentials = kubeapi.Credentials.resolve(str(plane.kubeconfig))
    heard: Heard = []
    deliver = podevents.Subscribers()
    deliver.listeners.append(("test", hearing("expiring", heard)))

    class Expiring(podevents.PodWatch):
        """The first listing's version is one the apiserver no longer has (as after a long
        disconnection): it answers 410 Gone and the pods must be listed again."""

        async def _list(self, kube: kubeapi.KubeApi) -> str:
            version = await super()._list(kube)
            return "1" if self.listings == 1 else version

    watch = Expiring(credentials, deliver)
    api = kubeapi.KubeApi(credentials)
    try:
        await api.create("/api/v1/namespaces", {"metadata": {"name": "expiring"}})
        await api.create("/api/v1/namespaces/expiring/pods", plain_pod("early"))
        await api.close()  # its connection dies with the apiserver
        # etcd forgets old versions (it compacts every few minutes), and a restarted
        # apiserver's watch cache starts at the present: version 1 is gone for good.
        compact(plane)
        await asyncio.to_thread(controlplane.restart_apiserver, plane)
        watch.start()
        await until(lambda: watch.listings >= 2)
        # Listed twice (type None both times), then events flow from the fresh version.
        assert [(name, kind) for name, kind, _ in heard] == [("early", None), ("early", None)]
        await api.create("/api/v1/namespaces/expiring/pods", plain_pod("late"))
        await until(lambda: ("late", "ADDED") in [(n, k) for n, k, _ in heard])
        assert watch.listings == 2
    finally:
        await watch.stop()
        await api.close()
        plane.stop()


async def test_labelled_handlers_hear_only_their_pods_and_a_standby_hears_nothing(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "podwatch")
    credentials = kubeapi.Credentials.resolve(str(control_plane.kubeconfig))
    api = kubeapi.KubeApi(credentials)
    pods = f"/api/v1/namespaces/{namespace}/pods"
    handled: list[tuple[str, str | None]] = []
    registry = kopf.OperatorRegistry()

    async def handler(body: Mapping[str, Any], event_type: str | None) -> None:
        if body["metadata"]["namespace"] == namespace:
            handled.append((body["metadata"]["name"], event_type))

    podevents.handle(registry, "uses", handler, labels={"uses": "true"})
    active = False

    async def is_active() -> bool:
        return active

    deliver = podevents.subscribers(registry)
    watch = podevents.PodWatch(credentials, deliver, active=is_active, recheck=0.2)
    try:
        watch.start()
        await api.create(pods, plain_pod("used", uses="true"))
        await api.create(pods, plain_pod("plain"))
        await api.create(pods, plain_pod("other", uses="false"))
        await asyncio.sleep(1.0)
        assert (watch.listings, handled) == (0, [])  # a standby replica does not watch
        active = True
        await asyncio.wait_for(watch.listed.wait(), 30)
        await until(lambda: handled)
        await api.patch(f"{pods}/plain", {"metadata": {"labels": {"x": "1"}}})
        await api.patch(f"{pods}/used", {"metadata": {"labels": {"x": "1"}}})
        await until(lambda: len(handled) == 2)
        assert handled == [("used", None), ("used", "MODIFIED")]
    finally:
        await watch.stop()
        await api.close()
