"""A ``muster run`` of its own for the model gate tests: it reads the plain-HTTP test registry
(``--insecure-registry``) and injects a known verifier image (``--verifier-image``).

Its webhook configurations have their own names and select only namespaces labelled
``muster.dev/e2e=models``; those namespaces also carry ``muster.dev/ignore=true`` so that the
session operator's webhooks (which honour the opt-out label) leave them to this one.
"""

from __future__ import annotations

import base64
import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from muster.adapters import controlplane, kube, localoperator
from muster.core import scopes, webhookconfigs
from tests import peers

OWN_NAMESPACE = "muster-models-e2e"
SUITE_LABEL = "muster.dev/e2e"
NAMESPACE_LABELS = {
    scopes.ENFORCE_LABEL: "true",
    scopes.OPT_OUT_LABEL: "true",
    SUITE_LABEL: "models",
}
VERIFIER_IMAGE = "registry.example/muster/muster@sha256:" + "5e" * 32
CONFIGURATION = "muster.dev.models-e2e"


def _own(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["name"] = CONFIGURATION
    for hook in manifest["webhooks"]:
        expressions = hook["namespaceSelector"]["matchExpressions"]
        expressions[:] = [e for e in expressions if e["key"] != scopes.OPT_OUT_LABEL]
        expressions.append({"key": SUITE_LABEL, "operator": "In", "values": ["models"]})
    return manifest


@pytest.fixture(scope="package")
def models_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    localoperator.install_crds(control_plane)
    operator = localoperator.start(
        control_plane,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-models-operator"),
        extra_args=(f"--insecure-registry={registry.host}", f"--verifier-image={VERIFIER_IMAGE}"),
    )
    api: Any = kube.api_client(control_plane.kubeconfig)
    admission: Any = client.AdmissionregistrationV1Api(api)
    try:
        ca_bundle = base64.b64encode(operator.ca_file.read_bytes()).decode("ascii")
        kube.ensure_namespace(api, OWN_NAMESPACE)
        for build in (webhookconfigs.validating, webhookconfigs.mutating):
            kube.apply_webhook_configuration(
                api, _own(build(operator.url, ca_bundle, own_namespace=OWN_NAMESPACE))
            )
        yield operator
    finally:
        for delete in (
            admission.delete_validating_webhook_configuration,
            admission.delete_mutating_webhook_configuration,
        ):
            with contextlib.suppress(client.ApiException):
                delete(CONFIGURATION)
        api.close()
        operator.stop()
        print(f"--- muster run (models) log ---\n{operator.log.read_text()[-6000:]}")
