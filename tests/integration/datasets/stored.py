"""Datasets as the apiserver stores them, for the dataset tests against a real apiserver: waiting
for the freshly installed CRDs to be served, creating a Dataset and handing its watch events to
the dataset controller, and deleting what a test made."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from muster.datasets import controllers
from muster.kernel import crds
from muster.platform import kubeapi

__all__ = ["API", "create", "delete", "eventually", "served", "watched"]

API = f"/apis/{crds.GROUP}/{crds.VERSION}"


async def eventually(probe: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = time.monotonic() + 20
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.2)


async def served(kube: kubeapi.KubeApi) -> None:
    """Until the Dataset resources are served: right after a CRD is installed its storage may
    still answer 429 "(re)initializing"."""

    async def serving() -> bool:
        try:
            for plural in ("datasets", "datasetpolicies"):
                await kube.get(f"{API}/{plural}")
        except kubeapi.ApiError:
            return False
        return True

    await eventually(serving, "the Dataset resources served")


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
