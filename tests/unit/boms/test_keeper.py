"""The BOM keeper's event path: opted-in namespaces only, one rewrite per workload, bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from muster import cli
from muster.admission import server as webhooks
from muster.app import runtime
from muster.boms import keeper as keeping
from muster.boms.rules import cyclonedx as boms
from muster.images import gate as imagegate
from muster.kernel import scopes
from muster.platform import kubeapi, registries

pytestmark = pytest.mark.unit

OWN = "muster-system"


def pod(namespace: str, name: str, owner: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["ownerReferences"] = [
            {"kind": "ReplicaSet", "name": f"{owner}-5d9c7", "controller": True}
        ]
    return {"metadata": metadata, "spec": {"containers": [{"name": "c", "image": "x.example/a"}]}}


@pytest.fixture
async def services() -> AsyncIterator[runtime.Services]:
    # Nothing here talks to an API server: note() must never do I/O.
    kube = kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))
    found = runtime.Services(
        settings=runtime.OperatorSettings(webhook=webhooks.WebhookSettings(), own_namespace=OWN),
        kube=kube,
        registries=registries.RegistryClient(),
    )
    namespaces = imagegate.area_for(found).namespaces
    namespaces.update("judged", {scopes.ENFORCE_LABEL: "true"})
    namespaces.update("warned", {scopes.ENFORCE_LABEL: "warn"})
    namespaces.update("bystander", {"team": "x"})
    yield found
    await kube.close()


@pytest.mark.parametrize(
    ("namespace", "labels", "kept"),
    [
        ("apps", {scopes.ENFORCE_LABEL: "true"}, True),
        ("apps", {scopes.ENFORCE_LABEL: "warn"}, True),
        ("apps", {scopes.ENFORCE_LABEL: "enforce", scopes.OPT_OUT_LABEL: "true"}, True),
        ("apps", {scopes.ENFORCE_LABEL: "nonsense"}, False),
        ("apps", {}, False),
        ("apps", None, False),
        ("kube-system", {scopes.ENFORCE_LABEL: "true"}, False),
        (OWN, {scopes.ENFORCE_LABEL: "true"}, False),
        ("", {scopes.ENFORCE_LABEL: "true"}, False),
    ],
)
def test_only_opted_in_namespaces_keep_boms(
    namespace: str, labels: dict[str, str] | None, kept: bool
) -> None:
    assert boms.in_scope(namespace, labels, own_namespace=OWN) is kept


async def test_pods_of_namespaces_that_did_not_opt_in_are_not_kept(
    services: runtime.Services,
) -> None:
    keeper = keeping.Keeper(services, services.kube)
    assert not keeper.note(pod("bystander", "a"))
    assert not keeper.note(pod("kube-system", "dns"))
    assert not keeper.note(pod(OWN, "muster"))
    assert keeper.stats.out_of_scope == 3
    assert keeper.pending == 0
    assert keeper.note(pod("judged", "a"))
    assert keeper.note(pod("warned", "b"))
    # A namespace the watch has not reported yet is decided by the worker, after a read.
    assert keeper.note(pod("unknown-yet", "c"))
    assert keeper.pending == 3


async def test_events_of_one_workload_coalesce_into_one_rewrite(
    services: runtime.Services,
) -> None:
    keeper = keeping.Keeper(services, services.kube)
    for index in range(50):
        assert keeper.note(pod("judged", f"web-5d9c7-{index}", owner="web"))
    assert keeper.note(pod("judged", "batch"))
    assert keeper.pending == 2  # Deployment web and Pod batch
    assert keeper.stats.noted == 51
    assert keeper.stats.coalesced == 49


async def test_the_pending_set_is_bounded(services: runtime.Services) -> None:
    keeper = keeping.Keeper(services, services.kube, capacity=3)
    noted = [keeper.note(pod("judged", f"p{index}")) for index in range(5)]
    assert noted == [True, True, True, False, False]
    assert keeper.stats.dropped == 2
    assert keeper.pending == 3
    assert keeper.note(pod("judged", "p0"))  # already pending: folded in, not dropped
    assert keeper.stats.dropped == 2


async def test_deleting_pods_are_not_kept(services: runtime.Services) -> None:
    keeper = keeping.Keeper(services, services.kube)
    gone = pod("judged", "a")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not keeper.note(gone)
    assert keeper.pending == 0


def test_bom_keeping_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = runtime.OperatorSettings(webhook=webhooks.WebhookSettings())
    assert settings.keep_boms is True

    def keep_boms(*argv: str) -> bool:
        return bool(cli.build_parser().parse_args(["run", *argv]).keep_boms)

    monkeypatch.delenv("MUSTER_KEEP_BOMS", raising=False)
    assert keep_boms() is True
    assert keep_boms("--no-keep-boms") is False
    assert keep_boms("--keep-boms") is True
    monkeypatch.setenv("MUSTER_KEEP_BOMS", "false")
    assert keep_boms() is False
    assert keep_boms("--keep-boms") is True
