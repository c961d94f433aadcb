"""An operator of its own for the vulnerability and BOM tests: it scans with trivy against a
tiny DB and speaks plain HTTP to the test registry.

Its webhook configurations have their own names and select only namespaces labelled
``muster-e2e.dev/vulns``, so they never meet the session operator's or the image tests'.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from muster.app import localoperator
from muster.platform import controlplane
from tests import peers
from tests.e2e.suites import mode_selector, suite_operator
from tests.integration.images.conftest import signers
from tests.integration.vulnerabilities.conftest import trivy_cache

__all__ = ["scan_operator", "signers", "trivy_cache"]

OWN_NAMESPACE = "muster-vulns-e2e"
SELECT_LABEL = "muster-e2e.dev/vulns"
CONFIGURATION = "vulns-e2e.muster.dev"


@pytest.fixture(scope="module")
def scan_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    trivy_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration=CONFIGURATION,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-vulns"),
        select=mode_selector(SELECT_LABEL),
        extra_args=(
            f"--insecure-registry={registry.host}",
            f"--trivy-cache-dir={trivy_cache}",
            "--scan-concurrency=2",
            "--scan-timeout=120",
        ),
    ) as operator:
        yield operator
