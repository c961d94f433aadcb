"""An image reference pointing at an internal service is denied by the image gate with a
clear reason; Muster never connects there (real apiserver, real registry)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from muster.admission import server
from muster.app import runtime
from muster.images import gate as imagegate
from muster.kernel import findings, gates, subjects
from muster.platform import controlplane, kubeapi, registries
from tests import kubeclients, peers
from tests.imagegates import subject
from tests.integration.images import conftest as images

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> images.Signer:
    return images._signer(tmp_path_factory.mktemp("egress-signer"), "egress")


async def _area(
    plane: controlplane.ControlPlane, settings: registries.RegistrySettings
) -> tuple[imagegate.ImageArea, runtime.Services]:
    operator_settings = runtime.OperatorSettings(
        webhook=server.WebhookSettings(), registry=settings
    )
    services = runtime.Services(
        settings=operator_settings,
        kube=kubeapi.KubeApi(kubeapi.Credentials.resolve(str(plane.kubeconfig))),
        registries=registries.RegistryClient(settings),
    )
    return imagegate.area_for(services), services


def _subject(namespace: str, image: str) -> subjects.Subject:
    obj = {
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }
    return subject(namespace, obj)


@pytest.fixture
async def namespace(control_plane: controlplane.ControlPlane) -> AsyncIterator[str]:
    yield kubeclients.namespace(control_plane, "egress")


async def test_references_to_internal_services_are_denied_never_fetched(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signer: images.Signer,
    namespace: str,
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "egress/gate", "v1", workdir=tmp_path)
    settings = registries.RegistrySettings(
        insecure_registries=frozenset({registry.host}),
        deny_hosts=(registry.host,),
        private_networks=False,
        request_timeout=30,
    )
    area, services = await _area(control_plane, settings)
    try:
        for compiled in (
            images.policy("169.254.169.254", signer, name="metadata"),
            images.policy("10.0.0.1:5000", signer, name="private"),
            images.policy(registry.host, signer, name="denied"),
        ):
            area.store.put(compiled)
        area.store.listed_at = time.monotonic()
        area.store.refresh = 3600
        cases = {
            "169.254.169.254/latest/meta-data:v1": "cloud metadata address",
            f"169.254.169.254/latest/app@{digest}": "cloud metadata address",
            "10.0.0.1:5000/team/app:v1": "private address",
            f"{registry.host}/egress/gate@{digest}": "deny list entry",
        }
        for image, expected in cases.items():
            started = time.monotonic()
            judged = await imagegate.ImageGate(area).judge(
                _subject(namespace, image), gates.Phase.VALIDATE
            )
            assert time.monotonic() - started < 5  # refused, not timed out
            assert judged.findings, f"{image} was allowed"
            assert all(f.mode is findings.Mode.ENFORCE for f in judged.findings)
            assert any(expected in f.message for f in judged.findings), judged.findings
            mutated = await imagegate.ImageGate(area).judge(
                _subject(namespace, image), gates.Phase.MUTATE
            )
            assert mutated.patch == ()
        assert services.registries.stats.requests == 0
    finally:
        await area.verifier.close()
        await services.close()
