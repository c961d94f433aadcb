"""A ``muster run`` of its own for the dataset gate tests: it reads the plain-HTTP test registry
(``--insecure-registry``) and injects a known verifier image (``--verifier-image``).

Its webhook configurations have their own names and select only namespaces labelled
``muster.dev/e2e=datasets``; those namespaces also carry ``muster.dev/ignore=true`` so that the
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

__all__ = ["NAMESPACE_LABELS", "SUITE_LABEL", "VERIFIER_IMAGE", "datasets_operator"]

OWN_NAMESPACE = "muster-datasets-e2e"
NAMESPACE_LABELS = suite_labels("datasets")
VERIFIER_IMAGE = "registry.example/muster/muster@sha256:" + "5d" * 32


@pytest.fixture(scope="package")
def datasets_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration="muster.dev.datasets-e2e",
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-datasets-operator"),
        select=suite_selector("datasets"),
        extra_args=(
            f"--insecure-registry={registry.host}",
            f"--verifier-image={VERIFIER_IMAGE}",
            # Datasets are what is judged here; images no ImagePolicy covers (image volumes
            # included) are tests/e2e/images/test_uncovered.py's.
            "--uncovered-images=allow",
            "--namespace-selector=" + json.dumps({"matchLabels": {SUITE_LABEL: "datasets"}}),
        ),
    ) as operator:
        yield operator
