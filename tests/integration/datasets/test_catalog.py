"""The process's one Dataset catalog against a real apiserver: shared by the gate and the
controllers, re-listed on a miss, a broken DatasetPolicy keeps its last good version, and a
resource the apiserver does not serve (no CRD) reads as nothing."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from muster.admission import server
from muster.app import localoperator, runtime
from muster.datasets import catalog as datasetcatalog
from muster.datasets import controllers, gate
from muster.kernel import crds
from muster.platform import catalogs, controlplane, kubeapi, registries
from tests.integration.datasets.stored import API, served

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "ca" * 32


@pytest.fixture
async def services(
    control_plane: controlplane.ControlPlane,
) -> AsyncIterator[runtime.Services[runtime.OperatorSettings]]:
    localoperator.install_crds(control_plane)
    kube = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    found = runtime.Services(
        settings=runtime.OperatorSettings(webhook=server.WebhookSettings()),
        kube=kube,
        registries=registries.RegistryClient(),
    )
    try:
        await served(kube)
        yield found
    finally:
        await found.close()


def _object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_one_catalog_per_process_re_listed_on_a_miss(
    services: runtime.Services[runtime.OperatorSettings],
) -> None:
    catalog = datasetcatalog.catalog_for(services)
    (dataset_gate,) = gate.gates_for(services)
    assert isinstance(dataset_gate, gate.DatasetGate)
    assert dataset_gate.catalog is catalog is controllers.controller_for(services).catalog
    looked: list[bool] = []
    catalog.cache_observer = looked.append
    await catalog.current()
    assert looked == [False]  # the first look lists
    name = f"late-{uuid.uuid4().hex[:6]}"
    await services.kube.create(f"{API}/datasets", _object("Dataset", name, {"digest": DIGEST}))
    try:
        catalog.min_reload_interval = 0.0
        entry = await catalog.find(name)
        assert entry is not None and entry.spec.digest == DIGEST
        assert looked == [False, True, False]  # answered from memory, then re-listed
        assert await catalog.find(f"never-{name}") is None
    finally:
        await services.kube.delete(f"{API}/datasets/{name}")


async def test_a_broken_policy_keeps_its_last_good_version(
    services: runtime.Services[runtime.OperatorSettings],
) -> None:
    catalog = datasetcatalog.DatasetCatalog(services.kube)
    name = f"kept-{uuid.uuid4().hex[:6]}"
    path = f"{API}/datasetpolicies/{name}"
    await services.kube.create(
        f"{API}/datasetpolicies",
        _object(
            "DatasetPolicy",
            name,
            {"namespaceSelector": {"matchLabels": {name: "x"}}, "requireSignature": True},
        ),
    )
    try:
        await catalog.reload()
        assert catalog.index.policies[name].require_signature
        # Valid for the schema, not for Muster: a licence pattern that is no SPDX id.
        await services.kube.patch(
            path, {"spec": {"requireSignature": False, "licenses": {"deny": ["no such!"]}}}
        )
        await catalog.reload()
        assert catalog.index.policies[name].require_signature  # the last good version
        assert catalog.index.invalid[f"DatasetPolicy/{name}"].startswith("licenses.deny")
        await services.kube.delete(path)
        await catalog.reload()
        assert name not in catalog.index.policies
    finally:
        try:
            await services.kube.delete(path)
        except kubeapi.ApiError as error:
            assert error.status == 404


async def test_no_crd_reads_as_nothing_and_other_failures_fail_the_gate(
    services: runtime.Services[runtime.OperatorSettings],
) -> None:
    # What the catalog sees before the Dataset CRDs are installed: 404, so nothing selects.
    assert await catalogs.list_items(services.kube, f"{API}/nosuchresources") == {"items": []}
    # Anything else (here: a client the apiserver does not know, 401) is raised, and the
    # dataset gate answers DatasetRegistryUnavailable rather than admit on an empty registry.
    stranger = kubeapi.KubeApi(
        dataclasses.replace(
            services.kube.credentials, cert_file=None, key_file=None, token="not-a-token"
        )
    )
    try:
        with pytest.raises(kubeapi.ApiError) as error:
            await datasetcatalog.DatasetCatalog(stranger).current()
        assert error.value.status == 401
    finally:
        await stranger.close()
