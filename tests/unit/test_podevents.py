"""Pod events reach the areas that listen through one pod watch, not one kopf handler each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
import pytest

from muster.admission import server
from muster.app import runtime
from muster.boms import keeper as boms
from muster.images import gate as imagegate
from muster.kernel import scopes
from muster.platform import objectstore, podevents, registries

pytestmark = pytest.mark.unit


def services(**settings: Any) -> runtime.Services:
    configured = runtime.OperatorSettings(webhook=server.WebhookSettings(), **settings)
    return runtime.Services(
        settings=configured,
        kube=objectstore.ObjectStore([]),
        registries=registries.RegistryClient(configured.registry),
    )


def pod_handlers(registry: kopf.OperatorRegistry) -> list[str]:
    # kopf keeps the event handlers in its watching registry (no public accessor).
    return [
        handler.id
        for handler in registry._watching.get_all_handlers()
        if handler.selector is not None and handler.selector.any_name == "pods"
    ]


def pod(namespace: str, name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "c", "image": "registry.example/a@sha256:" + "1" * 64}]},
    }


def test_the_pod_areas_share_one_watch_and_kopf_watches_no_pods(tmp_path: Path) -> None:
    scanning = runtime.build_registry(services(trivy_cache_dir=tmp_path))
    # kopf does not watch pods at all: BOMs and scans listen to every pod, the model and
    # dataset controllers handle only pods labelled as using models or datasets.
    assert pod_handlers(scanning) == []
    assert podevents.listeners(scanning) == ["vulnerabilities", "boms"]
    assert sorted(podevents.handlers(scanning)) == ["datasets", "models"]
    # A replica that does not scan has nothing to queue: no listener for it at all.
    quiet = runtime.build_registry(services())
    assert podevents.listeners(quiet) == ["boms"]
    assert podevents.listeners(runtime.build_registry(services(keep_boms=False))) == []
    assert pod_handlers(runtime.build_registry(services(keep_boms=False))) == []
    # The watch starts with the operator: one kopf start-up activity does it.
    startups = [h.id for h in scanning._activities.get_all_handlers()]
    assert sum("start_pod_watch" in name for name in startups) == 1


def test_every_listener_hears_every_event_even_when_one_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = kopf.OperatorRegistry()
    heard: list[tuple[str, str, str | None]] = []

    def broken(body: Mapping[str, Any], event_type: str | None) -> None:
        raise RuntimeError("a bug in one area")

    def keeping(body: Mapping[str, Any], event_type: str | None) -> None:
        heard.append(("keeping", body["metadata"]["name"], event_type))

    podevents.listen(registry, "broken", broken)
    podevents.listen(registry, "keeping", keeping)
    deliver = podevents.subscribers(registry)
    with caplog.at_level(logging.ERROR, logger="muster.podevents"):
        for event_type in ("ADDED", "DELETED"):
            deliver(pod("team", "a"), event_type)
    assert heard == [("keeping", "a", "ADDED"), ("keeping", "a", "DELETED")]
    assert [r.getMessage() for r in caplog.records] == ["pod event listener broken failed"] * 2


def test_labelled_handlers_get_their_pods_in_order_and_survive_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = kopf.OperatorRegistry()
    heard: list[tuple[str, str | None]] = []

    async def handler(body: Mapping[str, Any], event_type: str | None) -> None:
        await asyncio.sleep(0)  # a handler does I/O: later events wait their turn
        if body["metadata"]["name"] == "bad":
            raise RuntimeError("a bug in one area")
        heard.append((body["metadata"]["name"], event_type))

    podevents.handle(registry, "uses", handler, labels={"uses": "true"})
    deliver = podevents.subscribers(registry)

    def labelled(name: str, **labels: str) -> dict[str, Any]:
        body = pod("team", name)
        body["metadata"]["labels"] = labels
        return body

    async def scenario() -> None:
        deliver.start()
        deliver(labelled("a", uses="true"), None)
        deliver(labelled("b", uses="false"), "ADDED")
        deliver(labelled("bad", uses="true"), "ADDED")
        deliver(pod("team", "c"), "ADDED")
        deliver(labelled("a", uses="true", other="x"), "MODIFIED")
        deliver(labelled("a", uses="true"), "DELETED")
        for _ in range(20):
            await asyncio.sleep(0)
        await deliver.stop()

    with caplog.at_level(logging.ERROR, logger="muster.podevents"):
        asyncio.run(scenario())
    assert heard == [("a", None), ("a", "MODIFIED"), ("a", "DELETED")]
    assert [r.getMessage() for r in caplog.records] == ["pod event handler uses failed"]


def test_pods_of_namespaces_not_judged_are_not_kept() -> None:
    shared = services()
    registry = runtime.build_registry(shared)
    keeper = shared.areas[boms.KEEPER_AREA]
    namespaces = imagegate.area_for(shared).namespaces
    namespaces.update("judged", {scopes.ENFORCE_LABEL: "true"})
    namespaces.update("plain", {"team": "other"})
    deliver = podevents.subscribers(registry)
    for namespace in ("plain", "judged", "plain"):
        deliver(pod(namespace, f"in-{namespace}"), "ADDED")
    assert keeper.pending == 1
    assert keeper.stats.out_of_scope == 2
    assert keeper.stats.noted == 1
