"""Admissions that find the Model or Dataset catalog stale at the same moment wait for one
re-list, against a real apiserver.

Every pod's admission reads both catalogs, re-listed from the API once they are older than
``max_age``. The admissions in flight when that age passes all find them stale at once; each
used to re-list again after the one before it, behind the catalog's lock: at 50 concurrent
pod creations, 50 re-lists in a row held pods for seconds (docs/performance.md, "The tail").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from muster.app import localoperator
from muster.datasets import catalog as datasetcatalog
from muster.models import gate as modelgate
from muster.platform import catalogs, controlplane, kubeapi
from tests import apiwaits

pytestmark = pytest.mark.integration

MAX_AGE = 1.0
IN_FLIGHT = 20


class RecordingKube(kubeapi.KubeApi):
    """The real client, remembering the paths it read (what the apiserver was asked)."""

    def __init__(self, credentials: kubeapi.Credentials) -> None:
        super().__init__(credentials)
        self.read: list[str] = []

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        self.read.append(path)
        return await super().get(path, params)


@pytest.fixture
async def kube(control_plane: controlplane.ControlPlane) -> AsyncIterator[RecordingKube]:
    localoperator.install_crds(control_plane)
    client = RecordingKube(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    try:
        await apiwaits.served(
            client, "models", "modelpolicies", "datasets", "datasetpolicies",
            what="the Model and Dataset resources served",
        )  # fmt: skip
        client.read.clear()
        yield client
    finally:
        await client.close()


Build = Callable[[kubeapi.KubeApi], catalogs.Catalog[Any, Any]]
CATALOGS: dict[str, Build] = {
    "models": lambda kube: modelgate.ModelCatalog(kube, max_age=MAX_AGE),
    "datasets": lambda kube: datasetcatalog.DatasetCatalog(kube, max_age=MAX_AGE),
}


@pytest.mark.parametrize("kind", sorted(CATALOGS))
async def test_admissions_finding_a_stale_catalog_wait_for_one_re_list(
    kube: RecordingKube, kind: str
) -> None:
    catalog = CATALOGS[kind](kube)
    await catalog.current()
    assert len(kube.read) == 2  # the objects and the policies
    await asyncio.sleep(MAX_AGE + 0.1)  # stale now, as after a quiet half minute
    kube.read.clear()
    looked: list[bool] = []
    catalog.cache_observer = looked.append
    indexes = await asyncio.gather(*(catalog.current() for _ in range(IN_FLIGHT)))
    assert looked == [False] * IN_FLIGHT  # every one of them found it stale
    assert sorted(kube.read) == sorted([catalog.objects_path, catalog.policies_path]), (
        f"{len(kube.read)} reads for {IN_FLIGHT} admissions: the re-list was repeated"
    )
    assert all(index is catalog.index for index in indexes)
    # Still re-listed once it is older than max_age again: the age is kept, only not repeated.
    await asyncio.sleep(MAX_AGE + 0.1)
    kube.read.clear()
    await catalog.current()
    assert len(kube.read) == 2
