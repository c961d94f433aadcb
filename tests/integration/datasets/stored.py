"""Datasets as the apiserver stores them, for the dataset tests against a real apiserver: waiting
for the freshly installed CRDs to be served, creating a Dataset and handing its watch events to
the dataset controller, and deleting what a test made."""

from __future__ import annotations

import contextlib
from typing import Any

from muster.datasets import controllers
from muster.kernel import crds
from muster.platform import kubeapi
from tests import apiwaits

__all__ = ["API", "create", "delete", "served", "watched"]

API = f"/apis/{crds.GROUP}/{crds.VERSION}"


async def served(kube: kubeapi.KubeApi) -> None:
    await apiwaits.served(kube, "datasets", "datasetpolicies", what="the Dataset resources served")


async def create(
    controller: controllers.DatasetController, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Create a Dataset and hand its ADDED event to the controller."""
    await controller.kube.create(
        f"{API}/datasets",
        {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": "Dataset",
            "metadata": {"name": name},
            "spec": spec,
        },
    )
    return await watched(controller, name, "ADDED")


async def watched(
    controller: controllers.DatasetController, name: str, event: str = "MODIFIED"
) -> dict[str, Any]:
    """The Dataset as stored, handed to the controller as a watch event; then as stored after."""
    await controller.dataset_event(event, await controller.kube.get(f"{API}/datasets/{name}"))
    return await controller.kube.get(f"{API}/datasets/{name}")


async def delete(kube: kubeapi.KubeApi, *names: str) -> None:
    for name in names:
        with contextlib.suppress(kubeapi.ApiError):
            await kube.delete(f"{API}/datasets/{name}")
