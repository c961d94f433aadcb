"""The dataset gate tests' own ``muster run`` (``datasets_operator``: see
:func:`tests.e2e.suites.verifying_operator_fixture`), and the admin's clients they share."""

from __future__ import annotations

from tests.e2e.suites import SUITE_LABEL, suite_labels, verifying_operator_fixture
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

datasets_operator = verifying_operator_fixture("datasets", VERIFIER_IMAGE)
