from __future__ import annotations

from collections.abc import Iterator

import pytest

from muster.app import localoperator
from muster.platform import controlplane

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
        operator.stop()
        print(f"--- muster run log ---\n{operator.log.read_text()[-4000:]}")
