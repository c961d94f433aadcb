"""A ``muster run`` of its own for the observability scenario: it reads the plain-HTTP test
registry (``--insecure-registry``) and honours an exemption group, so that every gate contacts a
real registry, caches, counts and writes Events that Prometheus and the apiserver can show.

Its webhook configurations have their own names and select only namespaces labelled
``muster.dev/e2e=observability``; those also carry ``muster.dev/ignore=true`` so that the
session operator leaves them to this one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from muster.app import localoperator
from muster.platform import controlplane, processes
from tests import peers
from tests.e2e.suites import SUITE_LABEL, suite_labels, suite_operator, suite_selector
from tests.integration.images.conftest import signers

__all__ = [
    "BREAKGLASS",
    "DEAD_REGISTRY",
    "NAMESPACE_LABELS",
    "OWN_NAMESPACE",
    "SUITE",
    "VERIFIER_IMAGE",
    "observed_operator",
    "signers",
]

SUITE = "observability"
OWN_NAMESPACE = "muster-observability-e2e"
NAMESPACE_LABELS = suite_labels(SUITE)
BREAKGLASS = "observability-breakglass"
# A registry that refuses connections: a real ``unreachable`` outcome for the registry panels
# and the MusterRegistryUnreachable alert (nothing listens on a port just found free).
VERIFIER_IMAGE = "registry.example/muster/muster@sha256:" + "5e" * 32
DEAD_REGISTRY = f"127.0.0.1:{processes.free_port()}"


@pytest.fixture(scope="package")
def observed_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration="muster.dev.observability-e2e",
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-observability-operator"),
        select=suite_selector(SUITE),
        extra_args=(
            f"--insecure-registry={registry.host}",
            f"--insecure-registry={DEAD_REGISTRY}",
            f"--exemption-group={BREAKGLASS}",
            # The model gate injects a verifier init container: the default image is a tag.
            f"--verifier-image={VERIFIER_IMAGE}",
            # Revocation and drift Events on this suite's pods come from this operator alone,
            # as only its webhooks select them (the session operator honours the opt-out).
            "--namespace-selector=" + json.dumps({"matchLabels": {SUITE_LABEL: SUITE}}),
        ),
    ) as operator:
        yield operator
