"""The caches admission reads are re-read ahead of their age, in the background, against a real
apiserver: namespace labels, the GPU index, the ImagePolicy list and the Model and Dataset
catalogs.

Past half its maximum age (still within it), a cache answers at once and starts one re-read in
the background, however many readers find it so; past its maximum age, readers wait for one
shared read as before; a background re-read that fails leaves the old data, which still expires
at its maximum age (a revoked Model or a changed policy is seen as soon as before).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from muster.app import localoperator
from muster.datasets import catalog as datasetcatalog
from muster.gpu import nodes as gpunodes
from muster.images import gate as imagegate
from muster.models import gate as modelgate
from muster.platform import controlplane, kubeapi, namespaces, processes, refreshahead
from tests import apiwaits

pytestmark = pytest.mark.integration

READERS = 20


class HeldKube(kubeapi.KubeApi):
    """The real client, remembering the paths it read; while ``held`` is clear, every read
    waits before it goes to the apiserver (a slow apiserver, for as long as a test wants)."""

    def __init__(self, credentials: kubeapi.Credentials) -> None:
        super().__init__(credentials)
        self.read: list[str] = []
        self.held = asyncio.Event()
        self.held.set()

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        self.read.append(path)
        await self.held.wait()
        return await super().get(path, params)


@dataclasses.dataclass
class Cache:
    """One cache as the admission path reads it: how to read it, its maximum age, how to age
    what it holds, when it last loaded, and the paths one refresh reads."""

    read: Callable[[], Awaitable[object]]
    max_age: float
    age_to: Callable[[float], None]
    loaded_at: Callable[[], float]
    paths: list[str]
    ahead: refreshahead.RefreshAhead
    fails_closed: bool  # past max_age, a failed read fails the reader (else: the old set stays)
    swap_kube: Callable[[kubeapi.KubeApi], None]
    key: str | None = None  # what the refresh in flight is kept under (namespaces: the name)


def catalog_cache(catalog: Any) -> Cache:
    def age_to(age: float) -> None:
        catalog._loaded_at = time.monotonic() - age

    return Cache(
        read=catalog.current,
        max_age=catalog.max_age,
        age_to=age_to,
        loaded_at=lambda: catalog._loaded_at,
        paths=sorted([catalog.objects_path, catalog.policies_path]),
        ahead=catalog._ahead,
        fails_closed=True,
        swap_kube=lambda kube: setattr(catalog, "kube", kube),
    )


def namespace_cache(kube: kubeapi.KubeApi) -> Cache:
    index = namespaces.NamespaceIndex(kube, ttl=1.0)

    def age_to(age: float) -> None:
        index.seen["default"] = (time.monotonic() - age, index.seen["default"][1])

    return Cache(
        read=lambda: index.labels("default"),
        max_age=index.ttl,
        age_to=age_to,
        loaded_at=lambda: index.seen["default"][0],
        paths=["/api/v1/namespaces/default"],
        ahead=index._ahead,
        fails_closed=True,
        swap_kube=lambda kube: setattr(index, "kube", kube),
        key="default",
    )


def image_policy_cache(kube: kubeapi.KubeApi) -> Cache:
    store = imagegate.PolicyStore(kube, refresh=1.0)

    def age_to(age: float) -> None:
        store.listed_at = time.monotonic() - age

    return Cache(
        read=store.snapshot,
        max_age=store.refresh,
        age_to=age_to,
        loaded_at=lambda: store.listed_at or float("-inf"),
        paths=[imagegate.POLICIES_PATH],
        ahead=store._ahead,
        fails_closed=False,  # the last set listed stays in force (PolicyStore._unavailable)
        swap_kube=lambda kube: setattr(store, "kube", kube),
    )


def gpu_cache(kube: kubeapi.KubeApi) -> Cache:
    index = gpunodes.GPUIndex(kube)

    def age_to(age: float) -> None:
        index._listed_at = time.monotonic() - age

    return Cache(
        read=index.refresh,
        max_age=gpunodes._API_REFRESH_SECONDS,
        age_to=age_to,
        loaded_at=lambda: index._listed_at,
        paths=sorted(["/api/v1/nodes", gpunodes._POLICIES_PATH]),
        ahead=index._ahead,
        fails_closed=True,
        swap_kube=lambda kube: setattr(index, "kube", kube),
    )


CACHES: dict[str, Callable[[kubeapi.KubeApi], Cache]] = {
    "models": lambda kube: catalog_cache(modelgate.ModelCatalog(kube, max_age=1.0)),
    "datasets": lambda kube: catalog_cache(datasetcatalog.DatasetCatalog(kube, max_age=1.0)),
    "namespaces": namespace_cache,
    "imagepolicies": image_policy_cache,
    "gpu": gpu_cache,
}


@pytest.fixture
async def kube(control_plane: controlplane.ControlPlane) -> AsyncIterator[HeldKube]:
    localoperator.install_crds(control_plane)
    client = HeldKube(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    try:
        await apiwaits.served(
            client, "models", "modelpolicies", "datasets", "datasetpolicies", "imagepolicies",
            "gpustackpolicies", what="Muster's resources served",
        )  # fmt: skip
        yield client
    finally:
        client.held.set()
        await refreshahead.close_all()
        await client.close()


async def loaded(kube: HeldKube, kind: str) -> Cache:
    cache = CACHES[kind](kube)
    await cache.read()
    kube.read.clear()
    return cache


async def settled(cache: Cache) -> None:
    for _ in range(200):
        if not cache.ahead.in_flight(cache.key):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background refresh did not end")


@pytest.mark.parametrize("kind", sorted(CACHES))
async def test_within_max_age_readers_do_not_wait_and_one_refresh_runs(
    kube: HeldKube, kind: str
) -> None:
    cache = await loaded(kube, kind)
    cache.age_to(cache.max_age * 0.75)
    before = cache.loaded_at()
    kube.held.clear()  # the apiserver answers nothing until released
    # Every reader answers although no read can finish: none waits for the refresh.
    await asyncio.wait_for(asyncio.gather(*(cache.read() for _ in range(READERS))), 2.0)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(cache.read() for _ in range(READERS))), 2.0)
    assert cache.ahead.in_flight(cache.key)
    assert cache.loaded_at() == before  # still the old data, within its max age
    kube.held.set()
    await settled(cache)
    assert sorted(kube.read) == cache.paths, f"{kube.read}: one refresh for {2 * READERS} reads"
    assert time.monotonic() - cache.loaded_at() < cache.max_age * 0.5  # fresh again
    kube.read.clear()
    await cache.read()
    assert kube.read == []  # fresh: no refresh started


@pytest.mark.parametrize("kind", sorted(CACHES))
async def test_past_max_age_readers_wait_for_one_shared_read(kube: HeldKube, kind: str) -> None:
    cache = await loaded(kube, kind)
    cache.age_to(cache.max_age * 1.1)
    kube.held.clear()
    readers = [asyncio.ensure_future(cache.read()) for _ in range(READERS)]
    await asyncio.sleep(0.2)
    assert not any(reader.done() for reader in readers), "a reader used data past its max age"
    kube.held.set()
    await asyncio.wait_for(asyncio.gather(*readers), 5.0)
    assert sorted(kube.read) == cache.paths, f"{kube.read}: not one shared read"
    assert time.monotonic() - cache.loaded_at() < cache.max_age * 0.5


@pytest.mark.parametrize("kind", sorted(CACHES))
async def test_a_failed_background_refresh_keeps_the_data_to_its_max_age_only(
    kube: HeldKube, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = await loaded(kube, kind)
    # An apiserver nobody answers at: every read fails with a refused connection.
    dead = kubeapi.KubeApi(
        dataclasses.replace(kube.credentials, host=f"https://127.0.0.1:{processes.free_port()}")
    )
    try:
        cache.swap_kube(dead)
        cache.age_to(cache.max_age * 0.75)
        before = cache.loaded_at()
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(cache.read(), 2.0)  # the old data, at once
            await settled(cache)
        assert cache.loaded_at() == before, "a failed refresh renewed the data's age"
        assert any("cannot refresh" in record.getMessage() for record in caplog.records)
        # Past its max age as it always was: the next reader reads (and fails) itself.
        cache.age_to(cache.max_age * 1.1)
        if cache.fails_closed:
            with pytest.raises((OSError, kubeapi.ApiError)):
                await cache.read()
        else:
            await cache.read()
            assert time.monotonic() - cache.loaded_at() > cache.max_age  # not renewed
        # The live apiserver again: a reader past max age waits for it and gets fresh data.
        cache.swap_kube(kube)
        kube.read.clear()
        await cache.read()
        assert sorted(kube.read) == cache.paths
    finally:
        await dead.close()
