from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from kubernetes import client

from muster.app import localoperator, webhookconfigs
from muster.platform import controlplane, kubesetup

OWN_NAMESPACE = "muster-system"


# Package scope: stopped when the e2e tests are done, so the integration tests that run after
# them in the same session (and share its control plane) never meet a second installation.
@pytest.fixture(scope="package")
def muster_operator(
    control_plane: controlplane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[localoperator.LocalOperator]:
    """The real ``muster run`` process, with webhook configurations pointing at it over TLS."""
    localoperator.install_crds(control_plane)
    operator = localoperator.start(
        control_plane,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-operator"),
    )
    try:
        localoperator.register_webhooks(control_plane, operator, own_namespace=OWN_NAMESPACE)
        yield operator
    finally:
        # Its webhooks go with it: the tests after the e2e ones share the control plane, and a
        # webhook of a stopped operator would refuse their pods.
        with contextlib.closing(kubesetup.api_client(control_plane.kubeconfig)) as api:
            admission = client.AdmissionregistrationV1Api(api)
            for delete in (
                admission.delete_validating_webhook_configuration,
                admission.delete_mutating_webhook_configuration,
            ):
                with contextlib.suppress(client.ApiException):
                    delete(webhookconfigs.NAME)
        operator.stop()
        print(f"--- muster run log ---\n{operator.log.read_text()[-4000:]}")
