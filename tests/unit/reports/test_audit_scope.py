"""Which namespaces audit judges: in reach but not opted in, never one opted out, never one
drift already judges (so audit changes nothing where enforcement applies)."""

from __future__ import annotations

import pytest

from muster.drift.rules import passes as drift
from muster.kernel import findings, scopes, selectors
from tests.unit.admission.test_scopes import CASES, CLUSTER, NAMESPACED, OWN

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("namespace", "labels", "namespaced", "cluster"), CASES)
def test_audit_is_exactly_the_reach_that_is_not_judged(
    namespace: str,
    labels: dict[str, str],
    namespaced: findings.Mode | None,
    cluster: findings.Mode | None,
) -> None:
    for enforcement, mode in ((NAMESPACED, namespaced), (CLUSTER, cluster)):
        audited = drift.audited(namespace, labels, own_namespace=OWN, enforcement=enforcement)
        reach = scopes.in_reach(namespace, labels, own_namespace=OWN, enforcement=enforcement)
        assert audited == (reach and mode is None), (namespace, labels, enforcement.scope)
        if mode is not None:
            assert not audited  # a judged namespace is never audited as well


def test_a_selector_never_makes_audit_judge_an_opted_out_namespace() -> None:
    selector = selectors.LabelSelector.model_validate({"matchLabels": {"team": "ml"}})
    picked = {"team": "ml"}
    assert drift.audited("ml", picked, own_namespace=OWN, selector=selector)
    assert not drift.audited(
        "ml", {**picked, scopes.OPT_OUT_LABEL: "true"}, own_namespace=OWN, selector=selector
    )
    assert not drift.audited("other", {"team": "web"}, own_namespace=OWN, selector=selector)
    opted_in = {**picked, scopes.ENFORCE_LABEL: "true"}
    assert not drift.audited("ml", opted_in, own_namespace=OWN, selector=selector)


def test_audit_candidates_are_the_running_pods_of_audited_namespaces() -> None:
    def pod(name: str, namespace: str, phase: str = "Running") -> dict[str, object]:
        return {"metadata": {"name": name, "namespace": namespace}, "status": {"phase": phase}}

    pods = [
        pod("a", "plain"),
        pod("done", "plain", "Succeeded"),
        pod("b", "opted"),
        pod("c", "ignored"),
        pod("d", "kube-system"),
        pod("e", OWN),
        pod("f", "unknown"),
    ]
    labels = {
        "plain": {},
        "opted": {scopes.ENFORCE_LABEL: "true"},
        "ignored": {scopes.OPT_OUT_LABEL: "true"},
        "kube-system": {},
        OWN: {},
    }
    chosen = drift.audit_candidates(pods, labels, own_namespace=OWN)
    assert [p["metadata"]["name"] for p in chosen] == ["a"]
