"""An operator of its own for the vulnerability and BOM tests: it scans with trivy against a
tiny DB and speaks plain HTTP to the test registry.

Its webhook configurations have their own names and select only namespaces labelled
``muster-e2e.dev/vulns``, so they never meet the session operator's or the image tests'.
"""

from __future__ import annotations

import base64
import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.adapters import controlplane, kube, localoperator
from muster.core import webhookconfigs
from tests import peers
from tests.integration.images.conftest import signers
from tests.integration.vulnerabilities.conftest import trivy_cache

__all__ = ["scan_operator", "signers", "trivy_cache"]

OWN_NAMESPACE = "muster-vulns-e2e"
SELECT_LABEL = "muster-e2e.dev/vulns"
CONFIGURATION = "vulns-e2e.muster.dev"


def _own(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["name"] = CONFIGURATION
    for hook in manifest["webhooks"]:
        mode = hook["clientConfig"]["url"].rsplit("/", 1)[-1]
        hook["namespaceSelector"] = {"matchLabels": {SELECT_LABEL: mode}}
    return manifest


@pytest.fixture(scope="module")
def scan_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    trivy_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    localoperator.install_crds(control_plane)
    operator = localoperator.start(
        control_plane,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-vulns"),
        extra_args=(
            f"--insecure-registry={registry.host}",
            f"--trivy-cache-dir={trivy_cache}",
            "--scan-concurrency=2",
            "--scan-timeout=120",
        ),
    )
    api = kube.api_client(control_plane.kubeconfig)
    admission: Any = client.AdmissionregistrationV1Api(api)
    try:
        ca_bundle = base64.b64encode(operator.ca_file.read_bytes()).decode("ascii")
        kube.ensure_namespace(api, OWN_NAMESPACE)
        for manifest in (
            webhookconfigs.validating(operator.url, ca_bundle, own_namespace=OWN_NAMESPACE),
            webhookconfigs.mutating(operator.url, ca_bundle, own_namespace=OWN_NAMESPACE),
        ):
            kube.apply_webhook_configuration(api, _own(manifest))
        yield operator
    finally:
        with contextlib.suppress(client.ApiException):
            admission.delete_validating_webhook_configuration(CONFIGURATION)
        with contextlib.suppress(client.ApiException):
            admission.delete_mutating_webhook_configuration(CONFIGURATION)
        api.close()
        operator.stop()
        print(f"--- muster run (vulnerabilities) log ---\n{operator.log.read_text()[-4000:]}")
