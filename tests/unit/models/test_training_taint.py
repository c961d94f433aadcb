"""When the models controller announces tainted training data: on a Dataset's revoked-through
state turning on (itself or an ancestor), never for what was already revoked at start-up, once
per turn; and the gauge of pods using such Models. The controller's catalogs are fed as the
watches feed them; listing pods reaches an address nothing listens on, so each announcement
names the Models without pods (the e2e suite shows the Events on real pods)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from muster.datasets import catalog as datasetcatalog
from muster.models import controllers
from muster.models import gate as modeladmission
from muster.platform import events, kubeapi, metrics
from muster.platform import namespaces as platformnamespaces

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
DATA = "sha256:" + "aa" * 32


def controller() -> controllers.ModelController:
    kube = kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))
    datasets = datasetcatalog.DatasetCatalog(kube, max_age=float("inf"))
    datasets._loaded_at = 0.0  # as if listed at start-up (empty)
    found = controllers.ModelController(
        kube=kube,
        catalog=modeladmission.ModelCatalog(kube, max_age=float("inf")),
        namespaces=platformnamespaces.NamespaceIndex(kube, ttl=float("inf")),
        recorder=events.EventRecorder(kube),
        metrics=metrics.Metrics(),
        datasets=datasets,
    )
    for name, trained_on in (("on-raw", "raw"), ("on-derived", "derived"), ("clean", "other")):
        spec = {"digest": OMS, "datasets": [{"name": trained_on}]}
        assert found.catalog.model_changed(name, spec, {}, 1) is None
    return found


def body(name: str, *parents: str, revoked: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"digest": DATA, "revoked": revoked}
    if parents:
        spec["lineage"] = {"parents": list(parents)}
    if revoked:
        spec["revocationReason"] = "licence withdrawn"
    return {"metadata": {"name": name, "generation": 1}, "spec": spec, "status": {}}


def on_a_controller(steps: Callable[[controllers.ModelController], Awaitable[None]]) -> None:
    """Run ``steps`` against a fresh :func:`controller`, closing its client after."""

    async def run() -> None:
        target = controller()
        try:
            await steps(target)
        finally:
            await target.kube.close()

    asyncio.run(run())


def gauge(target: controllers.ModelController) -> float | None:
    return target.metrics.registry.get_sample_value(
        "muster_pods_using_models_trained_on_revoked_data"
    )


def test_revoking_a_parent_taints_the_models_trained_on_its_descendants_once() -> None:
    async def steps(target: controllers.ModelController) -> None:
        # Start-up: what the watch lists first is recorded, not announced (an old revocation).
        assert await target.dataset_event("ADDED", body("old", revoked=True)) == {}
        assert await target.dataset_event("ADDED", body("raw")) == {}
        assert await target.dataset_event("ADDED", body("derived", "raw")) == {}
        target.usage["team/trainer"] = (("on-derived", OMS),)
        target.usage["team/other"] = (("clean", OMS),)
        target.refresh_gauge()
        assert gauge(target) == 0

        reported = await target.dataset_event("MODIFIED", body("raw", revoked=True))
        assert reported == {"on-derived": [], "on-raw": []}
        assert gauge(target) == 1
        # The same state again (a status write, a re-list): nothing more to say.
        assert await target.dataset_event("MODIFIED", body("raw", revoked=True)) == {}
        assert await target.dataset_event("MODIFIED", body("derived", "raw")) == {}
        # Reinstated, then revoked again: a new turn.
        assert await target.dataset_event("MODIFIED", body("raw")) == {}
        assert gauge(target) == 0
        assert await target.dataset_event("MODIFIED", body("raw", revoked=True)) != {}

    on_a_controller(steps)


def test_a_dataset_first_seen_under_a_revoked_parent_taints_its_models() -> None:
    async def steps(target: controllers.ModelController) -> None:
        assert await target.dataset_event("ADDED", body("raw", revoked=True)) == {}
        # Models named "derived" before it was registered; now it is, under a revoked parent.
        assert await target.dataset_event("ADDED", body("derived", "raw")) == {"on-derived": []}
        # An invalid spec taints nothing and breaks nothing.
        broken = body("other")
        broken["spec"]["digest"] = "not-a-digest"
        assert await target.dataset_event("ADDED", broken) == {}
        assert await target.dataset_event("DELETED", body("raw")) == {}

    on_a_controller(steps)
