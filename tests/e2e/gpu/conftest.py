"""A ``muster run`` of its own for the GPU stack tests: it must read image configs from the
plain-HTTP test registry (``--insecure-registry``), which the session operator does not.

Its webhook configurations have their own names and select only namespaces labelled
``muster.dev/e2e=gpu``; those namespaces also carry ``muster.dev/ignore=true`` so that the
session operator's webhooks (which honour the opt-out label) leave them to this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from muster.adapters import controlplane, localoperator
from tests import peers
from tests.e2e.suites import SUITE_LABEL, suite_labels, suite_operator, suite_selector

__all__ = ["NAMESPACE_LABELS", "SUITE_LABEL", "gpu_operator"]

OWN_NAMESPACE = "muster-gpu-e2e"
NAMESPACE_LABELS = suite_labels("gpu")


@pytest.fixture(scope="package")
def gpu_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration="muster.dev.gpu-e2e",
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-gpu-operator"),
        select=suite_selector("gpu"),
        extra_args=(
            f"--insecure-registry={registry.host}",
            # The GPU stack is what is judged here; images no ImagePolicy covers are
            # tests/e2e/images/test_uncovered.py's.
            "--uncovered-images=allow",
        ),
    ) as operator:
        yield operator
