"""Pod events reach the areas that listen through one kopf handler, not one per area."""

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


def deliver(handler: Any, body: dict[str, Any], event_type: str) -> None:
    """Call a kopf event handler as kopf does, with the arguments it uses."""
    raw: Any = body  # a pod as the watch delivers it
    asyncio.run(handler.fn(body=kopf.Body(raw), type=event_type))


def pod(namespace: str, name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "c", "image": "registry.example/a@sha256:" + "1" * 64}]},
    }


def test_the_all_pods_areas_share_one_kopf_handler(tmp_path: Path) -> None:
    scanning = runtime.build_registry(services(trivy_cache_dir=tmp_path))
    # BOMs and scans share "pod-events"; the model and dataset controllers' handlers only take
    # pods labelled as using models or datasets (label filters kopf applies before invoking
    # anything).
    labelled = ["controllers.<locals>.dataset_pod_event", "controllers.<locals>.pod_event"]
    assert sorted(pod_handlers(scanning)) == [*labelled, "pod-events"]
    assert podevents.listeners(scanning) == ["vulnerabilities", "boms"]
    # A replica that does not scan has nothing to queue: no listener for it at all.
    quiet = runtime.build_registry(services())
    assert podevents.listeners(quiet) == ["boms"]
    assert podevents.listeners(runtime.build_registry(services(keep_boms=False))) == []
    assert sorted(pod_handlers(runtime.build_registry(services(keep_boms=False)))) == labelled


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
    (handler,) = registry._watching.get_all_handlers()
    with caplog.at_level(logging.ERROR, logger="muster.podevents"):
        for event_type in ("ADDED", "DELETED"):
            deliver(handler, pod("team", "a"), event_type)
    assert heard == [("keeping", "a", "ADDED"), ("keeping", "a", "DELETED")]
    assert [r.getMessage() for r in caplog.records] == ["pod event listener broken failed"] * 2


def test_pods_of_namespaces_not_judged_are_not_kept() -> None:
    shared = services()
    registry = runtime.build_registry(shared)
    keeper = shared.areas[boms.KEEPER_AREA]
    namespaces = imagegate.area_for(shared).namespaces
    namespaces.update("judged", {scopes.ENFORCE_LABEL: "true"})
    namespaces.update("plain", {"team": "other"})
    (handler,) = [h for h in registry._watching.get_all_handlers() if h.id == "pod-events"]
    for namespace in ("plain", "judged", "plain"):
        deliver(handler, pod(namespace, f"in-{namespace}"), "ADDED")
    assert keeper.pending == 1
    assert keeper.stats.out_of_scope == 2
    assert keeper.stats.noted == 1
