from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from muster.admission import server as webhooks
from muster.app import localoperator, runtime
from muster.images import gate as imagegate
from muster.platform import controlplane, kubeapi, registries
from tests.integration.images.conftest import signers

__all__ = ["services", "signers"]


@pytest.fixture
async def services(
    control_plane: controlplane.ControlPlane,
) -> AsyncIterator[runtime.Services[runtime.OperatorSettings]]:
    localoperator.install_crds(control_plane)
    kube = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    found = runtime.Services(
        settings=runtime.OperatorSettings(webhook=webhooks.WebhookSettings()),
        kube=kube,
        registries=registries.RegistryClient(),
    )
    yield found
    await imagegate.area_for(found).verifier.close()
    await kube.close()
