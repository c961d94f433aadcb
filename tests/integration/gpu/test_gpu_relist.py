"""The GPU index re-listed from the real apiserver keeps what it knew of a node the listing
shows unchanged (same resourceVersion), and reads again only what changed, joined or left."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from muster.gpu import nodes as gpunodes
from muster.gpu.rules import stack as gpustack
from muster.platform import controlplane, kubeapi
from tests.unit.gpu.conftest import node_label_files, node_labels

pytestmark = pytest.mark.integration

H100 = node_labels(next(p for p in node_label_files() if "single" in p.name))


@pytest.fixture
async def kube(control_plane: controlplane.ControlPlane) -> AsyncIterator[kubeapi.KubeApi]:
    client = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    try:
        yield client
    finally:
        for name in CREATED:
            try:
                await client.delete(f"/api/v1/nodes/{name}")
            except kubeapi.ApiError as error:
                if error.status != 404:
                    raise
        CREATED.clear()
        await client.close()


CREATED: list[str] = []  # deleted after each test


async def create(kube: kubeapi.KubeApi, name: str) -> None:
    await kube.create("/api/v1/nodes", {"metadata": {"name": name, "labels": H100}})
    CREATED.append(name)


async def relisted(index: gpunodes.GPUIndex) -> dict[str, Any]:
    index._listed_at = -1e9  # due now
    await index.refresh()
    return dict(index.nodes)


async def test_unchanged_nodes_are_kept_and_changed_ones_read_again(kube: kubeapi.KubeApi) -> None:
    prefix = f"relist-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i}" for i in range(3)]
    for name in names:
        await create(kube, name)
    index = gpunodes.GPUIndex(kube)
    first = await relisted(index)
    assert set(names) <= set(first)
    assert index.nodes[names[0]].facts.gpu

    again = await relisted(index)
    assert all(again[name] is first[name] for name in names), "an unchanged node was read again"

    driverless = {k: v for k, v in H100.items() if not k.startswith("nvidia.com/cuda.driver")}
    await kube.patch(
        f"/api/v1/nodes/{names[1]}",
        {"metadata": {"labels": {k: None for k in H100 if k not in driverless}}},
    )
    await kube.delete(f"/api/v1/nodes/{names[2]}")
    await create(kube, f"{prefix}-new")
    changed = await relisted(index)
    assert changed[names[0]] is first[names[0]]
    assert changed[names[1]] is not first[names[1]]
    assert changed[names[1]].facts != first[names[1]].facts
    assert names[2] not in changed
    assert f"{prefix}-new" in changed
    assert gpustack.node_facts(driverless, name=names[1]) == index.nodes[names[1]].facts
