"""The chart's enforcement scope and trust-anchor guard, rendered by the real helm: the webhooks
select what `muster run` judges, and the policies are the ones `muster dev up` installs."""

from __future__ import annotations

from typing import Any

import pytest

from muster.app import webhookconfigs
from muster.guards.rules import trustanchors
from muster.kernel import scopes
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

OPERATOR = "system:serviceaccount:muster-system:muster"
AGENT = "system:serviceaccount:muster-system:muster-node-agent"


def _args(docs: list[dict[str, Any]]) -> list[str]:
    (container,) = rendering.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args


@pytest.mark.parametrize(
    ("values", "enforcement"),
    [
        ([], scopes.NAMESPACED),
        (["--set=enforcement.scope=cluster"], scopes.Enforcement.of("cluster")),
        (
            ["--set=enforcement.scope=cluster", "--set=webhook.excludeNamespaces={monitoring,ci}"],
            scopes.Enforcement.of("cluster", ["monitoring", "ci"]),
        ),
        (
            ["--set=webhook.excludeNamespaces={monitoring}"],
            scopes.Enforcement.of("namespaced", ["monitoring"]),
        ),
    ],
)
def test_webhooks_and_operator_share_the_scope(
    values: list[str], enforcement: scopes.Enforcement
) -> None:
    docs = rendering.documents(rendering.template(*values))
    for kind, build in (
        ("ValidatingWebhookConfiguration", webhookconfigs.validating),
        ("MutatingWebhookConfiguration", webhookconfigs.mutating),
    ):
        want = build("https://x", "", own_namespace="muster-system", enforcement=enforcement)
        want_selectors = {h["name"]: h["namespaceSelector"] for h in want["webhooks"]}
        got = {
            h["name"]: h["namespaceSelector"]
            for h in rendering.one(docs, kind)["webhooks"]
            if h["name"] in want_selectors
        }
        assert got == want_selectors, kind
    args = _args(docs)
    assert f"--enforcement-scope={enforcement.scope}" in args
    assert sorted(a for a in args if a.startswith("--exclude-namespace=")) == sorted(
        f"--exclude-namespace={name}" for name in enforcement.excluded
    )


def test_cluster_scope_selects_unlabelled_namespaces_for_enforce() -> None:
    docs = rendering.documents(rendering.template("--set=enforcement.scope=cluster"))
    hooks = {
        h["name"]: h for h in rendering.one(docs, "ValidatingWebhookConfiguration")["webhooks"]
    }
    enforce = hooks["enforce.validate.pods.muster.dev"]["namespaceSelector"]["matchExpressions"]
    warn = hooks["warn.validate.pods.muster.dev"]["namespaceSelector"]["matchExpressions"]
    assert {"key": "muster.dev/enforce", "operator": "NotIn", "values": ["warn"]} in enforce
    assert {"key": "muster.dev/enforce", "operator": "In", "values": ["warn"]} in warn
    for expressions in (enforce, warn):
        assert {"key": "muster.dev/ignore", "operator": "NotIn", "values": ["true"]} in expressions


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "enforcement.scope=global"], "/enforcement/scope"),
        (["--set", "enforcement.scopes=cluster"], "additional properties 'scopes'"),
        (["--set", "trustAnchors.enable=false"], "additional properties 'enable'"),
        (["--set", "trustAnchors.groups={}"], "/trustAnchors/groups/0"),
    ],
)
def test_the_schema_knows_the_new_values(args: list[str], message: str) -> None:
    assert message in rendering.refusal(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "enforcement.scope=global"], 'unknown scope "global"'),
        (
            ["--set", "enforcement.scope=cluster", "--set", "webhook.modes={warn}"],
            "webhook.modes must include enforce",
        ),
    ],
)
def test_scope_guards_hold_without_the_schema(args: list[str], message: str) -> None:
    assert message in rendering.refusal(*args, schema=False)


def _anchor_docs(*values: str) -> list[dict[str, Any]]:
    docs = rendering.documents(rendering.template(*values))
    return [
        doc
        for doc in docs
        if doc["kind"].startswith("ValidatingAdmissionPolicy")
        and "-trust-anchors-" in doc["metadata"]["name"]
    ]


@pytest.mark.parametrize(
    ("values", "writers"),
    [
        ([], trustanchors.Writers(OPERATOR)),
        (["--set=nodeAgent.enabled=true"], trustanchors.Writers(OPERATOR, AGENT, True)),
        (
            ["--set=nodeAgent.enabled=true", "--set=nodeAgent.restrictToOwnNode=false"],
            trustanchors.Writers(OPERATOR, AGENT, False),
        ),
        (
            [
                "--set=trustAnchors.users={alice,bob}",
                "--set=trustAnchors.groups={platform-admins}",
                "--set=serviceAccount.name=custom",
            ],
            trustanchors.Writers(
                "system:serviceaccount:muster-system:custom",
                None,
                False,
                ("alice", "bob"),
                ("platform-admins",),
            ),
        ),
    ],
)
def test_the_chart_ships_the_policies_dev_up_installs(
    values: list[str], writers: trustanchors.Writers
) -> None:
    """The chart adds its settings to files/trust-anchors.yaml; muster.guards.rules.trustanchors
    builds the same for `muster dev up`: the two must be the very same policies."""
    # helm orders what it renders by kind: compared by kind and name.
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in _anchor_docs(*values)}
    expected = {
        (d["kind"], d["metadata"]["name"]): d for d in trustanchors.manifests("muster", writers)
    }
    assert rendered.keys() == expected.keys()
    for key, want in expected.items():
        assert rendered[key]["spec"] == want["spec"], key
        assert rendered[key]["metadata"]["labels"]["app.kubernetes.io/component"] == "guard"


def test_the_guard_can_be_turned_off() -> None:
    assert len(_anchor_docs()) == 4
    assert _anchor_docs("--set=trustAnchors.enabled=false") == []
