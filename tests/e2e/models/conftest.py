"""The model gate tests' own ``muster run`` (``models_operator``: see
:func:`tests.e2e.suites.verifying_operator_fixture`), and the admin's clients they share."""

from __future__ import annotations

from tests.e2e.suites import SUITE_LABEL, suite_labels, verifying_operator_fixture
from tests.e2e.workloads import objects, plane

__all__ = [
    "NAMESPACE_LABELS",
    "SUITE_LABEL",
    "VERIFIER_IMAGE",
    "models_operator",
    "objects",
    "plane",
]

NAMESPACE_LABELS = suite_labels("models")
VERIFIER_IMAGE = "registry.example/muster/muster@sha256:" + "5e" * 32

models_operator = verifying_operator_fixture("models", VERIFIER_IMAGE)
