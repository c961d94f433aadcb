"""The BOM keeper against a real API server: it never races the ImagePolicy controller, it
rewrites a busy workload once, and it stays out of namespaces that did not opt in."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from muster.app import runtime
from muster.boms import keeper as keeping
from muster.images import gate as imagegate
from muster.kernel import crds, scopes
from muster.platform import controlplane
from tests import kubeclients
from tests.integration.images.conftest import Signer

pytestmark = pytest.mark.integration


def pod(namespace: str, name: str, image: str, owner: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["ownerReferences"] = [
            {"kind": "ReplicaSet", "name": f"{owner}-7f8b9", "controller": True}
        ]
    return {"metadata": metadata, "spec": {"containers": [{"name": "main", "image": image}]}}


async def test_keeping_a_bom_never_takes_a_new_policy_from_its_controller(
    control_plane: controlplane.ControlPlane,
    services: runtime.Services,
    signers: dict[str, Signer],
) -> None:
    """A new ImagePolicy that a BOM rewrite meets before the policy controller does.

    The rewrite used to list and compile the policies itself; the controller then found the
    policy in the store, took it as handled and wrote no ``Compiled`` status (until its timer,
    a minute later). Now the rewrite reads only what the controller compiled.
    """
    namespace = kubeclients.namespace(control_plane, "bom-race", {scopes.ENFORCE_LABEL: "true"})
    name = f"bom-race-{uuid.uuid4().hex[:6]}"
    policy = await services.kube.create(
        imagegate.POLICIES_PATH,
        {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": "ImagePolicy",
            "metadata": {"name": name},
            "spec": {
                "images": ["bom-race.example/**"],
                "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
            },
        },
    )
    area = imagegate.area_for(services)
    try:
        # Any pod will do (this image is not even the policy's): the old rewrite listed the
        # policies whatever the pod ran.
        written = await keeping.write(services, pod(namespace, "app", "elsewhere.example/app:v1"))
        assert written == "pod-app"
        assert area.store.listed_at is None  # it listed nothing
        assert name not in area.store.policies
        # The controller's turn, with the event the watch delivers.
        compiled = await imagegate.compile_into_status(area, policy)
        assert compiled is not None
        stored = await services.kube.get(f"{imagegate.POLICIES_PATH}/{name}")
        [condition] = stored["status"]["conditions"]
        assert (condition["type"], condition["status"], condition["reason"]) == (
            "Compiled",
            "True",
            "Compiled",
        )
    finally:
        await services.kube.delete(f"{imagegate.POLICIES_PATH}/{name}")


async def test_a_busy_workload_is_rewritten_once_and_bystanders_never(
    control_plane: controlplane.ControlPlane, services: runtime.Services
) -> None:
    judged = kubeclients.namespace(control_plane, "bom-busy", {scopes.ENFORCE_LABEL: "warn"})
    bystander = kubeclients.namespace(control_plane, "bom-bystander")
    # The namespace watch has reported the bystander; the judged namespace it has not yet (the
    # worker reads its labels).
    imagegate.area_for(services).namespaces.update(bystander, {"team": "other"})
    keeper = keeping.Keeper(services, services.kube, debounce=0.3)
    keeper.start()
    try:
        started = time.monotonic()
        for index in range(40):
            keeper.note(pod(judged, f"web-7f8b9-{index}", "busy.example/web:v1", owner="web"))
            keeper.note(pod(bystander, f"other-{index}", "busy.example/other:v1"))
        noting = time.monotonic() - started
        # Noting never waits for the debounce (80 x 0.3 s) nor for the API: a generous bound.
        assert noting < 5, f"noting 80 pod events took {noting:.3f}s"
        assert keeper.stats.out_of_scope == 40
        assert keeper.pending == 1
        await asyncio.wait_for(keeper.drained(), timeout=30)
        assert keeper.stats.written == 1
        assert keeper.stats.coalesced == 39
        assert keeper.stats.failed == 0
        stored = await services.kube.get(keeping.bom_path(judged, "deployment-web"))
        elsewhere = await services.kube.get(keeping.bom_path(bystander))
        assert elsewhere["items"] == []
        document = json.loads(stored["spec"]["document"])
        [image] = [c for c in document["components"] if c["type"] == "container"]
        assert image["name"] == "busy.example/web"
    finally:
        await keeper.stop()
