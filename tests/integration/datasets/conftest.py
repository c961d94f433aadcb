from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from muster.admission import server
from muster.app import localoperator, runtime
from muster.datasets import controllers
from muster.kernel import selectors
from muster.platform import controlplane, events, kubeapi, registries
from tests.integration.datasets.stored import served

# The label of the namespaces whose pods the dataset controller reports on.
SUITE = "muster.dev/integration-datasets"
INSTANCE = "integration-datasets"  # the reportingInstance of the suite's Events


@pytest.fixture
async def controller(
    control_plane: controlplane.ControlPlane,
) -> AsyncIterator[controllers.DatasetController]:
    """The dataset controller of an operator with its own services, its Event recorder
    started, once the Dataset resources are served."""
    localoperator.install_crds(control_plane)
    settings = runtime.OperatorSettings(
        webhook=server.WebhookSettings(),
        # Like an installation whose webhooks select its own namespaces: it reports only on
        # pods in namespaces labelled for this suite.
        namespace_selector=selectors.LabelSelector.model_validate({"matchLabels": {SUITE: "yes"}}),
    )
    kube = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    services = runtime.Services(
        settings=settings, kube=kube, registries=registries.RegistryClient(settings.registry)
    )
    # Its own reporting instance: the session may run another installation (the e2e suites'
    # operator) that announces the same cluster-scoped Datasets; the tests read only this one's.
    services.events = events.EventRecorder(kube, instance=INSTANCE)
    found = controllers.controller_for(services)
    try:
        await served(kube)
        found.recorder.start()
        yield found
    finally:
        await services.close()
