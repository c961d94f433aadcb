"""A ``muster run`` of its own for the model gate tests: it reads the plain-HTTP test registry
(``--insecure-registry``) and injects a known verifier image (``--verifier-image``).

Its webhook configurations have their own names and select only namespaces labelled
``muster.dev/e2e=models``; those namespaces also carry ``muster.dev/ignore=true`` so that the
session operator's webhooks (which honour the opt-out label) leave them to this one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from muster.app import localoperator
from muster.platform import controlplane
from tests import peers
from tests.e2e.suites import SUITE_LABEL, suite_labels, suite_operator, suite_selector

__all__ = ["NAMESPACE_LABELS", "SUITE_LABEL", "VERIFIER_IMAGE", "models_operator"]

OWN_NAMESPACE = "muster-models-e2e"
NAMESPACE_LABELS = suite_labels("models")
VERIFIER_IMAGE = "registry.example/muster/muster@sha256:" + "5e" * 32


@pytest.fixture(scope="package")
def models_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration="muster.dev.models-e2e",
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-models-operator"),
        select=suite_selector("models"),
        extra_args=(
            f"--insecure-registry={registry.host}",
            f"--verifier-image={VERIFIER_IMAGE}",
            # Models are what is judged here; images no ImagePolicy covers (image volumes
            # included) are tests/e2e/images/test_uncovered.py's.
            "--uncovered-images=allow",
            # Its pods are its own to report on (revocations, drift), as its webhooks select them.
            "--namespace-selector=" + json.dumps({"matchLabels": {SUITE_LABEL: "models"}}),
        ),
    ) as operator:
        yield operator
