"""A Model's Compiled condition, written by the models controller through a real apiserver:
False with reason InvalidSpec and why when Muster refuses the spec (a licence that is no SPDX
expression), True once the spec is corrected, each for its own generation.

Watch events are handed to the controller as kopf would hand them: the object as the apiserver
stores it, read back after each change.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from muster.admission import server
from muster.app import localoperator, runtime
from muster.kernel import crds
from muster.models import controllers as modelcontrollers
from muster.platform import controlplane, events, kubeapi, registries

pytestmark = pytest.mark.integration

MODELS = f"/apis/{crds.GROUP}/{crds.VERSION}/models"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
async def kube(control_plane: controlplane.ControlPlane) -> AsyncIterator[kubeapi.KubeApi]:
    localoperator.install_crds(control_plane)
    found = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    deadline = time.monotonic() + 20
    while True:  # right after a CRD is installed its storage may answer 429 for a moment
        try:
            await found.get(MODELS)
            break
        except kubeapi.ApiError:
            assert time.monotonic() < deadline, "the Model resource is never served"
            await asyncio.sleep(0.2)
    try:
        yield found
    finally:
        await found.close()


def _conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}


async def test_a_malformed_licence_reads_as_compiled_false_until_corrected(
    kube: kubeapi.KubeApi,
) -> None:
    settings = runtime.OperatorSettings(webhook=server.WebhookSettings())
    services = runtime.Services(
        settings=settings, kube=kube, registries=registries.RegistryClient(settings.registry)
    )
    services.events = events.EventRecorder(kube)
    controller = modelcontrollers._controller(services)  # what the kopf handlers call
    name = f"licence-{uuid.uuid4().hex[:6]}"
    await kube.create(
        MODELS,
        {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": "Model",
            "metadata": {"name": name},
            "spec": {"digest": DIGEST, "license": "Apache-2.0 AND"},
        },
    )
    try:
        await controller.model_event("ADDED", await kube.get(f"{MODELS}/{name}"))
        stored = await kube.get(f"{MODELS}/{name}")
        conditions = _conditions(stored)
        compiled = conditions["Compiled"]
        assert (compiled["status"], compiled["reason"]) == ("False", "InvalidSpec")
        assert compiled["observedGeneration"] == 1
        assert "'Apache-2.0 AND' is not a valid SPDX licence expression" in compiled["message"]
        assert conditions["SignatureVerified"]["reason"] == "InvalidSpec"
        assert name not in controller.catalog.index.models  # approves nothing
        assert "SPDX" in controller.catalog.index.invalid[f"Model/{name}"]

        # Corrected: the next generation compiles (and the licence is kept as written).
        await kube.patch(f"{MODELS}/{name}", {"spec": {"license": "apache-2.0 or mit"}})
        await controller.model_event("MODIFIED", await kube.get(f"{MODELS}/{name}"))
        stored = await kube.get(f"{MODELS}/{name}")
        compiled = _conditions(stored)["Compiled"]
        assert (compiled["status"], compiled["reason"]) == ("True", "Compiled")
        assert compiled["observedGeneration"] == stored["metadata"]["generation"] == 2
        assert controller.catalog.index.models[name].spec.license == "Apache-2.0 OR MIT"
    finally:
        await kube.delete(f"{MODELS}/{name}")
        await services.close()
