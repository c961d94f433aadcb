"""The chart's namespace guard and record of namespace mode changes are the code's.

The guard's CEL lives once, in ``muster.guards.rules.namespaces``: the chart reads it from
``files/namespace-guard.yaml`` (generated from the code) and adds the ``namespaceGuard``
values. Rendered with any values, the policy equals ``namespaceguard.policy_spec`` for the same
settings, the record's webhook entry equals ``webhookconfigs.namespace_modes``, and the operator
is started with those settings, so what it records as refused is what the policy refuses.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from muster import cli
from muster.app import webhookconfigs
from muster.guards import flags as guards_flags
from muster.guards.rules import namespaces as namespaceguard
from tests.integration.chart import rendering
from tests.integration.chart.rendering import ROOT

pytestmark = pytest.mark.integration


def _rendered(*args: str) -> list[dict[str, Any]]:
    return rendering.documents(rendering.template(*args))


def _operator_args(docs: list[dict[str, Any]]) -> Any:
    """The Deployment's `muster run` arguments, parsed as it parses them."""
    deployment = rendering.one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return cli.build_parser().parse_args(container["args"])


def _operator_settings(docs: list[dict[str, Any]]) -> namespaceguard.GuardSettings:
    guard = guards_flags.FLAGS.settings(_operator_args(docs))["namespace_guard"]
    assert isinstance(guard, namespaceguard.GuardSettings)
    return guard


def test_the_generated_file_is_current() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "generate-default-policies.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, f"run python hack/generate-default-policies.py:\n{check.stderr}"


@pytest.mark.parametrize(
    ("values", "settings"),
    [
        ((), namespaceguard.GuardSettings()),
        (
            (
                "--set=namespaceGuard.managers.groups={platform-admins}",
                "--set=namespaceGuard.managers.users={system:serviceaccount:argocd:argocd}",
                "--set=namespaceGuard.protectedLabels={team,example.com/tier}",
                "--set=enforcement.scope=cluster",
                "--set=images.uncovered=warn",
            ),
            namespaceguard.GuardSettings(
                manager_groups=("platform-admins",),
                manager_users=("system:serviceaccount:argocd:argocd",),
                protected_labels=("team", "example.com/tier"),
                cluster_scope=True,
                uncovered_default="warn",
            ),
        ),
    ],
)
def test_the_chart_renders_the_guard_the_code_decides_with(
    values: tuple[str, ...], settings: namespaceguard.GuardSettings
) -> None:
    docs = _rendered(*values)
    (policy,) = [
        p
        for p in rendering.by_kind(docs, "ValidatingAdmissionPolicy")
        if p["metadata"]["name"] == "muster-namespace-guard"
    ]
    assert policy["spec"] == namespaceguard.policy_spec(settings)
    assert policy["metadata"]["labels"]["app.kubernetes.io/component"] == "namespace-guard"
    (binding,) = [
        b
        for b in rendering.by_kind(docs, "ValidatingAdmissionPolicyBinding")
        if b["spec"]["policyName"] == "muster-namespace-guard"
    ]
    assert binding["spec"] == {
        "policyName": "muster-namespace-guard",
        "validationActions": ["Deny"],
    }
    assert "matchResources" not in binding["spec"]  # every namespace, nothing to escape by

    # The record of mode changes: the code's entry, pointed at the Service.
    hooks = rendering.one(docs, "MutatingWebhookConfiguration")["webhooks"]
    (record,) = [h for h in hooks if h["name"] == webhookconfigs.NAMESPACE_MODES]
    expected = webhookconfigs.namespace_modes("https://unused", "", settings)
    for field in (
        "rules",
        "failurePolicy",
        "sideEffects",
        "admissionReviewVersions",
        "timeoutSeconds",
        "reinvocationPolicy",
        "matchConditions",
    ):
        assert record[field] == expected[field], field
    assert "namespaceSelector" not in record and "objectSelector" not in record
    assert record["clientConfig"]["service"]["path"] == namespaceguard.RECORD_PATH

    # The operator judges with the same settings (its scope and default for uncovered images
    # come from --enforcement-scope and --uncovered-images, which the chart also sets).
    args = _operator_args(docs)
    assert (args.enforcement_scope == "cluster") is settings.cluster_scope
    assert str(args.uncovered_images) == settings.uncovered_default
    operator = _operator_settings(docs)
    assert operator == namespaceguard.GuardSettings(
        manager_groups=settings.manager_groups,
        manager_users=settings.manager_users,
        protected_labels=settings.protected_labels,
    )


def test_the_guard_can_be_switched_off_and_the_record_stays() -> None:
    docs = _rendered("--set=namespaceGuard.enabled=false")
    names = [p["metadata"]["name"] for p in rendering.by_kind(docs, "ValidatingAdmissionPolicy")]
    assert "muster-namespace-guard" not in names
    hooks = rendering.one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert webhookconfigs.NAMESPACE_MODES in [h["name"] for h in hooks]
    assert _operator_settings(docs).enabled is False  # nothing is recorded as refused


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (
            "--set=namespaceGuard.managers.groups=null,namespaceGuard.managers.users=null",
            "/namespaceGuard/managers",
        ),
        ('--set-json=namespaceGuard.managers={"groups":[],"users":[]}', "/namespaceGuard/managers"),
        (
            "--set=namespaceGuard.protectedLabels={muster.dev/ignore}",
            "/namespaceGuard/protectedLabels/0",
        ),
        ("--set=namespaceGuard.protectedLabels={not a label}", "/namespaceGuard/protectedLabels/0"),
    ],
)
def test_the_schema_refuses_a_guard_nobody_could_manage(value: str, complaint: str) -> None:
    """Without a manager, no one could ever lower any namespace's enforcement (system:masters
    is not exempt from admission policies)."""
    stderr = rendering.refusal(value)
    assert complaint in stderr, stderr
