"""The namespace guard's rule in Python (its CEL twin is checked against the real apiserver in
tests/integration/security/test_namespace_guard.py) and the record of namespace mode changes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import parser

from muster.app import areas, webhookconfigs
from muster.guards import namespacemodes
from muster.guards.rules import namespaces as namespaceguard
from muster.kernel import observations
from muster.platform import metrics

pytestmark = pytest.mark.unit

ENFORCE, IGNORE = "muster.dev/enforce", "muster.dev/ignore"
UNCOVERED = "muster.dev/uncovered-images"
DEFAULTS = namespaceguard.GuardSettings()
TEAM = namespaceguard.GuardSettings(protected_labels=("team",), manager_users=("argocd",))


def decide(
    before: dict[str, str] | None,
    after: dict[str, str],
    user: str = "mallory",
    groups: tuple[str, ...] = ("developers",),
    settings: namespaceguard.GuardSettings = DEFAULTS,
) -> namespaceguard.ModeChange:
    return namespaceguard.decide(
        "team-a", before, after, username=user, groups=groups, settings=settings
    )


@pytest.mark.parametrize(
    ("before", "after", "issue"),
    [
        ({ENFORCE: "true"}, {}, "muster.dev/enforce from 'true' to (unset)"),
        ({ENFORCE: "enforce"}, {ENFORCE: "warn"}, "muster.dev/enforce from 'enforce' to 'warn'"),
        ({ENFORCE: "true"}, {ENFORCE: "TRUE"}, "muster.dev/enforce from 'true' to 'TRUE'"),
        ({ENFORCE: "warn"}, {ENFORCE: "off"}, "muster.dev/enforce from 'warn' to 'off'"),
        ({ENFORCE: "true"}, {ENFORCE: "true", IGNORE: "true"}, "muster.dev/ignore set to 'true'"),
        ({}, {IGNORE: "true"}, "muster.dev/ignore set to 'true'"),
        ({}, {UNCOVERED: "warn"}, f"{UNCOVERED} from (unset) to 'warn'"),  # default: deny
        ({UNCOVERED: "deny"}, {UNCOVERED: "Allow"}, f"{UNCOVERED} from 'deny' to 'Allow'"),
        ({UNCOVERED: "warn"}, {UNCOVERED: "allow"}, f"{UNCOVERED} from 'warn' to 'allow'"),
        ({UNCOVERED: "bogus"}, {UNCOVERED: "warn"}, f"{UNCOVERED} from 'bogus' to 'warn'"),
    ],
)
def test_lowering_enforcement_is_refused_unless_a_manager_asks(
    before: dict[str, str], after: dict[str, str], issue: str
) -> None:
    change = decide(before, after)
    assert change.refused and change.outcome == "refused"
    assert change.issues == (issue,)
    assert change.message == (
        f"muster: mallory may not lower the enforcement of namespace team-a: {issue}. "
        "Only namespace managers may: groups system:masters, muster:namespace-managers; "
        "users (none)"
    )
    for groups in (("system:masters",), ("developers", namespaceguard.MANAGER_GROUP)):
        allowed = decide(before, after, user="alice", groups=groups)
        assert not allowed.refused and allowed.issues == (issue,) and allowed.message == ""
    # With the guard switched off nothing is refused, and the change is still recorded.
    off = decide(before, after, settings=namespaceguard.GuardSettings(enabled=False))
    assert not off.refused and off.worth_recording


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, {ENFORCE: "warn"}),
        ({ENFORCE: "warn"}, {ENFORCE: "true"}),
        ({ENFORCE: "true"}, {ENFORCE: "enforce"}),  # the same mode, another spelling
        ({ENFORCE: "true", IGNORE: "true"}, {ENFORCE: "true"}),
        ({ENFORCE: "true", IGNORE: "true"}, {ENFORCE: "true", IGNORE: "false"}),
        ({ENFORCE: "bogus"}, {}),  # selected no mode before either
        ({ENFORCE: "true"}, {ENFORCE: "true", "team": "b"}),  # not protected by default
        ({UNCOVERED: "allow"}, {UNCOVERED: "warn"}),
        ({UNCOVERED: "warn"}, {}),  # back to the default, deny
        ({UNCOVERED: "deny"}, {UNCOVERED: "typo"}),  # a typo counts as deny
    ],
)
def test_raising_or_keeping_enforcement_is_always_allowed(
    before: dict[str, str], after: dict[str, str]
) -> None:
    change = decide(before, after)
    assert not change.refused and change.issues == ()


def test_creating_a_namespace_is_judged_from_no_labels() -> None:
    assert not decide(None, {ENFORCE: "true"}).refused  # opting in
    assert not decide(None, {}).refused  # not opting in: fine in the default scope
    created = decide(None, {ENFORCE: "true", IGNORE: "true"})
    assert created.refused and created.issues == ("muster.dev/ignore set to 'true'",)


def test_protected_labels_are_for_managers_only() -> None:
    for before, after, issue in (
        ({"team": "ml"}, {}, "team from 'ml' to (unset)"),
        ({"team": "ml"}, {"team": "infra"}, "team from 'ml' to 'infra'"),
        ({}, {"team": ""}, "team from (unset) to ''"),
    ):
        change = decide(before, after, settings=TEAM)
        assert change.issues == (issue,)
        assert change.refused
        assert change.message.endswith("users argocd")
        assert change.before is change.after is namespaceguard.NamespaceMode.OFF
        assert change.worth_recording  # a guarded change, though the mode stays
        assert not decide(before, after, user="argocd", settings=TEAM).refused
    # Listing a Muster label as protected changes nothing: raising stays allowed.
    odd = namespaceguard.GuardSettings(protected_labels=(ENFORCE,))
    assert not decide({}, {ENFORCE: "true"}, settings=odd).refused


def test_unset_uncovered_images_counts_as_the_operators_default() -> None:
    allowing = namespaceguard.GuardSettings(uncovered_default="allow")
    assert not decide({}, {UNCOVERED: "allow"}, settings=allowing).refused
    assert decide({UNCOVERED: "deny"}, {}, settings=allowing).refused  # deny to the default


def test_in_cluster_scope_only_warn_and_ignore_lower_enforcement() -> None:
    cluster = namespaceguard.GuardSettings(cluster_scope=True)
    assert not decide({ENFORCE: "true"}, {}, settings=cluster).refused  # still enforced
    assert not decide({ENFORCE: "warn"}, {}, settings=cluster).refused  # raised
    assert decide({}, {ENFORCE: "warn"}, settings=cluster).refused
    assert decide({}, {IGNORE: "true"}, settings=cluster).refused
    assert namespaceguard.mode({}, cluster_scope=True) is namespaceguard.NamespaceMode.ENFORCE


def test_modes_and_what_is_worth_recording() -> None:
    mode = namespaceguard.mode
    assert mode({ENFORCE: "true", IGNORE: "true"}) is namespaceguard.NamespaceMode.IGNORED
    assert mode({ENFORCE: "enforce"}) is namespaceguard.NamespaceMode.ENFORCE
    assert mode({ENFORCE: "warn"}) is namespaceguard.NamespaceMode.WARN
    assert mode({ENFORCE: "Warn"}) is namespaceguard.NamespaceMode.OFF
    assert decide({ENFORCE: "warn"}, {ENFORCE: "true"}).worth_recording  # raised
    assert not decide({ENFORCE: "true"}, {ENFORCE: "enforce"}).worth_recording
    assert not decide({"other": "a"}, {"other": "b"}).worth_recording


def review(
    operation: str,
    old: dict[str, str] | None,
    new: dict[str, str],
    *,
    dry_run: bool = False,
    user: str = "mallory",
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Namespace"},
            "resource": {"group": "", "version": "v1", "resource": "namespaces"},
            "name": "team-a",
            "operation": operation,
            "userInfo": {"username": user, "groups": ["developers", "system:authenticated"]},
            "object": {"metadata": {"name": "team-a", "labels": new}},
            "oldObject": None if old is None else {"metadata": {"name": "team-a", "labels": old}},
            "dryRun": dry_run,
        },
    }


def test_requests_become_changes_except_dry_runs_and_other_resources() -> None:
    request = review("UPDATE", {ENFORCE: "true"}, {ENFORCE: "warn"})["request"]
    change = namespaceguard.from_review(request, DEFAULTS)
    assert change is not None and change.refused and change.namespace == "team-a"
    dry = review("UPDATE", {ENFORCE: "true"}, {ENFORCE: "warn"}, dry_run=True)["request"]
    assert namespaceguard.from_review(dry, DEFAULTS) is None
    pods = {**request, "resource": {"group": "", "version": "v1", "resource": "pods"}}
    assert namespaceguard.from_review(pods, DEFAULTS) is None
    unchanged = review("UPDATE", {ENFORCE: "true"}, {ENFORCE: "true", "x": "y"})["request"]
    assert namespaceguard.from_review(unchanged, DEFAULTS) is None
    # A namespace created in a mode changed nothing; one created outside enforcement did.
    opted_in = review("CREATE", None, {ENFORCE: "true"})["request"]
    assert namespaceguard.from_review(opted_in, DEFAULTS) is None
    ignored = review("CREATE", None, {IGNORE: "true"}, user="admin")["request"]
    created = namespaceguard.from_review(ignored, DEFAULTS)
    assert created is not None and created.before is namespaceguard.NamespaceMode.OFF
    assert created.refused  # admin is in no manager group here


def test_events_go_to_the_namespace_or_to_muster_when_there_is_none() -> None:
    refused = decide({ENFORCE: "true"}, {ENFORCE: "warn"})
    notice = namespaceguard.notice(refused, "muster-system")
    assert notice.reason == "NamespaceModeChangeRefused"
    assert notice.type is observations.EventType.WARNING
    assert notice.target == observations.namespace_ref("team-a")
    assert notice.delivery is observations.Delivery.NOW
    assert notice.note == (
        "mallory tried to change namespace team-a from enforce to warn "
        "(muster.dev/enforce from 'true' to 'warn'): refused"
    )
    created = namespaceguard.decide(
        "team-b", None, {IGNORE: "true"}, username="alice", groups=[namespaceguard.MANAGER_GROUP],
        settings=DEFAULTS, operation="CREATE",
    )  # fmt: skip
    notice = namespaceguard.notice(created, "muster-system")
    assert notice.reason == "NamespaceModeChanged"
    assert notice.type is observations.EventType.NORMAL
    assert notice.delivery is observations.Delivery.WHEN_CREATED  # it exists once admitted
    assert notice.target == observations.namespace_ref("team-b")
    assert notice.note == (
        "alice changed namespace team-b from off to ignored (muster.dev/ignore set to 'true')"
    )
    refused_create = namespaceguard.decide(
        "team-c", None, {IGNORE: "true"}, username="mallory", groups=[], settings=DEFAULTS,
        operation="CREATE",
    )  # fmt: skip
    notice = namespaceguard.notice(refused_create, "muster-system")
    assert notice.target == observations.namespace_ref("muster-system")  # team-c never exists
    assert "namespace team-c" in notice.note


def test_cel_lists_are_written_as_helm_writes_them() -> None:
    assert namespaceguard.cel_list([]) == "[]"
    assert namespaceguard.cel_list(["a", "b"]) == '["a","b"]'
    # Go's encoding/json escapes HTML characters; Python's does not unless told.
    assert namespaceguard.cel_list(['x<y>&"z"']) == '["x\\u003cy\\u003e\\u0026\\"z\\""]'
    assert json.loads(namespaceguard.cel_list(['x<y>&"z"'])) == ['x<y>&"z"']


def test_the_record_webhook_is_added_only_when_asked() -> None:
    plain = webhookconfigs.mutating("https://h:1", "", own_namespace="m")["webhooks"]
    assert all(hook["name"].endswith(".pods.muster.dev") for hook in plain)
    hooks = webhookconfigs.mutating("https://h:1", "", own_namespace="m", namespace_guard=TEAM)[
        "webhooks"
    ]
    assert hooks[:-1] == plain
    record = hooks[-1]
    assert record["name"] == webhookconfigs.NAMESPACE_MODES
    assert record["clientConfig"]["url"] == "https://h:1/namespace-modes"
    assert record["failurePolicy"] == "Ignore"  # a record never blocks a namespace change
    assert record["sideEffects"] == "NoneOnDryRun"
    assert record["timeoutSeconds"] == 5
    conditions = {c["name"]: c["expression"] for c in record["matchConditions"]}
    assert conditions["not-a-dry-run"] == "!(has(request.dryRun) && request.dryRun)"
    watched = '["muster.dev/enforce","muster.dev/ignore","muster.dev/uncovered-images","team"]'
    assert watched in conditions["watched-label-changed"]


def test_the_policy_carries_the_settings_first() -> None:
    spec = namespaceguard.policy_spec(TEAM)
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert [v["name"] for v in spec["variables"][:5]] == [
        "managerGroups",
        "managerUsers",
        "protectedLabels",
        "clusterScope",
        "uncoveredDefault",
    ]
    assert variables["managerGroups"] == '["system:masters","muster:namespace-managers"]'
    assert variables["managerUsers"] == '["argocd"]'
    assert variables["protectedLabels"] == '["team"]'
    assert variables["clusterScope"] == "false"
    assert variables["uncoveredDefault"] == "'deny'"
    assert spec["failurePolicy"] == "Fail"
    assert spec["variables"][5:] == namespaceguard.STATIC_SPEC["variables"]
    spec["variables"].clear()  # a copy: the shared spec is untouched
    assert namespaceguard.STATIC_SPEC["variables"]


async def test_the_record_counts_and_reports_each_attempt_and_always_allows() -> None:
    m = metrics.Metrics(labels=areas.metric_labels())  # as muster run builds it
    submitted: list[observations.Notice] = []

    class Recorder:
        def start(self) -> None: ...

        def submit(self, notice: observations.Notice) -> bool:
            submitted.append(notice)
            return True

    modes = namespacemodes.NamespaceModes(DEFAULTS, m, Recorder(), "muster-system")  # type: ignore[arg-type]
    app = web.Application()
    namespacemodes.build_route(app, modes)
    async with TestClient(TestServer(app)) as http:
        for body in (
            review("UPDATE", {ENFORCE: "true"}, {}),  # refused
            review("UPDATE", {ENFORCE: "true"}, {}, user="admin"),  # refused too: no manager
            review("UPDATE", {ENFORCE: "warn"}, {ENFORCE: "true"}),  # raised: allowed
            review("UPDATE", {ENFORCE: "true"}, {}, dry_run=True),  # nothing recorded
        ):
            answer = await http.post(namespacemodes.PATH, json=body)
            assert answer.status == 200
            assert (await answer.json())["response"] == {"uid": "u-1", "allowed": True}
        assert (await http.post(namespacemodes.PATH, data=b"{")).status == 400
    counts = {
        (s.labels["from"], s.labels["to"], s.labels["outcome"]): s.value
        for family in parser.text_string_to_metric_families(m.exposition().decode())
        if family.name == "muster_namespace_mode_changes"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert len(counts) == 4 * 4 * 2  # every series exists from the start
    assert counts[("enforce", "off", "refused")] == 2
    assert counts[("warn", "enforce", "allowed")] == 1
    assert sum(counts.values()) == 3
    assert [n.reason for n in submitted] == [
        "NamespaceModeChangeRefused",
        "NamespaceModeChangeRefused",
        "NamespaceModeChanged",
    ]
