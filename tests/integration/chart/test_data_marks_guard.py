"""The chart's data-marks guard is the code's: rendered with any managers, the policy equals
``datamarks.policy_spec`` for the same settings, bound to every claim, and it goes with the
namespace guard (``namespaceGuard.enabled``)."""

from __future__ import annotations

from typing import Any

import pytest

from muster.guards.rules import datamarks as datamarksguard
from muster.guards.rules import namespaces as namespaceguard
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

NAME = "muster-data-marks-guard"


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in rendering.by_kind(docs, kind) if d["metadata"]["name"] == NAME]
    return found


@pytest.mark.parametrize(
    ("values", "settings"),
    [
        ((), namespaceguard.GuardSettings()),
        (
            (
                "--set=namespaceGuard.managers.groups={platform-admins}",
                "--set=namespaceGuard.managers.users={system:serviceaccount:argocd:argocd}",
            ),
            namespaceguard.GuardSettings(
                manager_groups=("platform-admins",),
                manager_users=("system:serviceaccount:argocd:argocd",),
            ),
        ),
    ],
)
def test_the_chart_renders_the_guard_the_code_decides_with(
    values: tuple[str, ...], settings: namespaceguard.GuardSettings
) -> None:
    docs = rendering.documents(rendering.template(*values))
    policy = _named(docs, "ValidatingAdmissionPolicy")
    assert policy["spec"] == datamarksguard.policy_spec(settings)
    assert policy["metadata"]["labels"]["app.kubernetes.io/component"] == "data-marks-guard"
    binding = _named(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": NAME, "validationActions": ["Deny"]}


def test_the_guard_goes_with_the_namespace_guard() -> None:
    docs = rendering.documents(rendering.template("--set=namespaceGuard.enabled=false"))
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        names = [d["metadata"]["name"] for d in rendering.by_kind(docs, kind)]
        assert NAME not in names
