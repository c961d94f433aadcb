"""A ``muster run`` of its own for the dataset gate tests: it reads the plain-HTTP test registry
(``--insecure-registry``) and injects a known verifier image (``--verifier-image``).

Its webhook configurations have their own names and select only namespaces labelled
``muster.dev/e2e=datasets``; those namespaces also carry ``muster.dev/ignore=true`` so that the
session operator's webhooks (which honour the opt-out label) leave them to this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from muster.app import localoperator
from muster.platform import controlplane
from tests import peers
from tests.e2e.suites import SUITE_LABEL, suite_labels, verifying_suite_operator
from tests.e2e.workloads import objects, plane

__all__ = [
    "NAMESPACE_LABELS",
    "SUITE_LABEL",
    "VERIFIER_IMAGE",
    "datasets_operator",
    "objects",
    "plane",
]

NAMESPACE_LABELS = suite_labels("datasets")
VERIFIER_IMAGE = "registry.example/muster/muster@sha256:" + "5d" * 32


@pytest.fixture(scope="package")
def datasets_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with verifying_suite_operator(
        control_plane,
        "datasets",
        registry_host=registry.host,
        verifier_image=VERIFIER_IMAGE,
        workdir=tmp_path_factory.mktemp("muster-datasets-operator"),
    ) as operator:
        yield operator
