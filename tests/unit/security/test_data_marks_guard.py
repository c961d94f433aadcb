"""The data-marks guard's rule in Python (its CEL twin is checked against the real apiserver in
tests/integration/security/test_data_marks_guard.py)."""

from __future__ import annotations

import pytest

from muster.guards.rules import datamarks as datamarksguard
from muster.guards.rules import namespaces as namespaceguard

pytestmark = pytest.mark.unit

MARK = "muster.dev/not-model-data"
TEAM = namespaceguard.GuardSettings(manager_users=("argocd",))


def decide(
    before: dict[str, str] | None,
    after: dict[str, str],
    user: str = "mallory",
    groups: tuple[str, ...] = ("developers",),
    settings: namespaceguard.GuardSettings = TEAM,
) -> str | None:
    return datamarksguard.decide(
        "team-a", "scratch", before, after, username=user, groups=groups, settings=settings
    )


def test_a_claim_created_with_the_mark_is_refused_naming_the_managers() -> None:
    assert decide(None, {MARK: "true"}) == (
        "muster: mallory may not mark PersistentVolumeClaim team-a/scratch: "
        "muster.dev/not-model-data from (unset) to 'true'. The label admits the claim as "
        "holding no model or training data under volumes: declaredOnly; only namespace "
        "managers may set it: groups system:masters, muster:namespace-managers; users argocd"
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, {MARK: "true"}),  # added
        ({MARK: "true"}, {}),  # removed
        ({MARK: "true"}, {MARK: "false"}),  # changed
        ({MARK: "false"}, {MARK: "true"}),
        ({}, {MARK: ""}),
    ],
)
def test_adding_changing_or_removing_the_mark_is_for_managers_only(
    before: dict[str, str], after: dict[str, str]
) -> None:
    assert decide(before, after) is not None
    assert decide(before, after, groups=("system:masters",)) is None
    assert decide(before, after, groups=(namespaceguard.MANAGER_GROUP,)) is None
    assert decide(before, after, user="argocd") is None


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, {}),
        (None, {"app": "cache"}),
        ({MARK: "true"}, {MARK: "true", "app": "cache"}),  # other labels of a marked claim
        ({"app": "cache"}, {}),
    ],
)
def test_everything_else_passes(before: dict[str, str] | None, after: dict[str, str]) -> None:
    assert decide(before, after) is None


def test_a_switched_off_guard_refuses_nothing() -> None:
    assert (
        decide(None, {MARK: "true"}, settings=namespaceguard.GuardSettings(enabled=False)) is None
    )


def test_the_policy_carries_the_managers_first() -> None:
    spec = datamarksguard.policy_spec(TEAM)
    assert spec["variables"][:2] == [
        {"name": "managerGroups", "expression": '["system:masters","muster:namespace-managers"]'},
        {"name": "managerUsers", "expression": '["argocd"]'},
    ]
    assert spec["matchConstraints"]["resourceRules"][0]["resources"] == [
        "persistentvolumeclaims",
        "persistentvolumeclaims/*",
    ]
    assert datamarksguard.STATIC_SPEC["variables"] == spec["variables"][2:]  # not changed
