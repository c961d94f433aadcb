"""Muster's CRDs: generated from the models, committed in the chart, accepted by the apiserver."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kubernetes import client

from muster.app import catalog
from muster.platform import controlplane
from tests import kubeclients
from tests.paths import REPO

pytestmark = pytest.mark.integration


def test_chart_crds_are_generated_from_the_catalog() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "generate-crds.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"run python hack/generate-crds.py:\n{result.stderr}"


@pytest.mark.parametrize("crd", catalog.definitions(), ids=lambda c: c["metadata"]["name"])
def test_the_real_apiserver_accepts_each_crd(
    control_plane: controlplane.ControlPlane, crd: dict[str, object]
) -> None:
    with kubeclients.admin(control_plane) as api:
        extensions = client.ApiextensionsV1Api(api)
        try:
            extensions.create_custom_resource_definition(crd)
        except client.ApiException as error:
            if error.status != 409:
                raise
        stored = extensions.read_custom_resource_definition(crd["metadata"]["name"])  # type: ignore[index]
    assert stored.spec.versions[0].schema.open_apiv3_schema.properties["spec"] is not None
