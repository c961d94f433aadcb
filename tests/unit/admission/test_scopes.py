"""Which namespaces are judged, in which mode: namespaced (opt-in) and cluster scope agree
between the handler's double check, the controllers and the webhooks' namespaceSelector."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from muster.admission import pipeline as admissions
from muster.app import runtime, webhookconfigs
from muster.drift.rules import passes as drift
from muster.images.rules import pinning
from muster.kernel import findings, gates, reviews, scopes, selectors
from tests import commandline
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

ENFORCE, WARN = findings.Mode.ENFORCE, findings.Mode.WARN
OWN = "muster-system"
CLUSTER = scopes.Enforcement.of("cluster", ["cert-manager"])
NAMESPACED = scopes.Enforcement.of("namespaced", ["cert-manager"])

# (namespace, labels, mode in namespaced scope, mode in cluster scope)
CASES: list[tuple[str, dict[str, str], findings.Mode | None, findings.Mode | None]] = [
    ("team", {}, None, ENFORCE),
    ("team", {"other": "x"}, None, ENFORCE),
    ("team", {scopes.ENFORCE_LABEL: "true"}, ENFORCE, ENFORCE),
    ("team", {scopes.ENFORCE_LABEL: "Enforce"}, ENFORCE, ENFORCE),
    ("team", {scopes.ENFORCE_LABEL: "warn"}, WARN, WARN),
    ("team", {scopes.ENFORCE_LABEL: "WARN"}, WARN, ENFORCE),
    # An unknown value never switches cluster scope off: only warn lowers it.
    ("team", {scopes.ENFORCE_LABEL: "false"}, None, ENFORCE),
    ("team", {scopes.ENFORCE_LABEL: ""}, None, ENFORCE),
    ("team", {scopes.OPT_OUT_LABEL: "true"}, None, None),
    ("team", {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true"}, None, None),
    ("team", {scopes.OPT_OUT_LABEL: "false"}, None, ENFORCE),
    ("kube-system", {scopes.ENFORCE_LABEL: "true"}, None, None),
    ("kube-public", {}, None, None),
    ("kube-node-lease", {}, None, None),
    (OWN, {scopes.ENFORCE_LABEL: "true"}, None, None),
    ("cert-manager", {scopes.ENFORCE_LABEL: "true"}, None, None),
    ("", {}, None, None),
]


@pytest.mark.parametrize(("namespace", "labels", "namespaced", "cluster"), CASES)
def test_mode_per_scope(
    namespace: str,
    labels: dict[str, str],
    namespaced: findings.Mode | None,
    cluster: findings.Mode | None,
) -> None:
    for enforcement, expected in ((NAMESPACED, namespaced), (CLUSTER, cluster)):
        found = scopes.mode_for_namespace(
            namespace, labels, own_namespace=OWN, enforcement=enforcement
        )
        assert found == expected, enforcement
        # The controllers (drift) re-judge exactly the namespaces admission judges.
        watched = scopes.watched_mode(namespace, labels, own_namespace=OWN, enforcement=enforcement)
        assert watched == expected, enforcement


def test_the_default_is_namespaced_and_excludes_nothing_extra() -> None:
    assert scopes.Enforcement() == scopes.NAMESPACED
    assert scopes.mode_for_namespace("team", {}, own_namespace=OWN) is None
    labels = {scopes.ENFORCE_LABEL: "true"}
    assert scopes.mode_for_namespace("cert-manager", labels, own_namespace=OWN) is ENFORCE


def test_an_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="'global'"):
        scopes.Enforcement.of("global")


def test_reach_excludes_the_listed_namespaces_in_both_scopes() -> None:
    for enforcement in (NAMESPACED, CLUSTER):
        assert scopes.in_reach("team", {}, own_namespace=OWN, enforcement=enforcement)
        assert not scopes.in_reach("cert-manager", {}, own_namespace=OWN, enforcement=enforcement)
        selector = selectors.LabelSelector.model_validate({"matchLabels": {"team": "ml"}})
        assert not scopes.in_reach(
            "cert-manager",
            {"team": "ml"},
            own_namespace=OWN,
            selector=selector,
            enforcement=enforcement,
        )
    # A selector (muster run --namespace-selector) narrows reach; cluster scope decides the mode.
    selector = selectors.LabelSelector.model_validate({"matchLabels": {"team": "ml"}})
    assert (
        scopes.watched_mode(
            "ml", {"team": "ml"}, own_namespace=OWN, selector=selector, enforcement=CLUSTER
        )
        is ENFORCE
    )
    assert (
        scopes.watched_mode("ml", {}, own_namespace=OWN, selector=selector, enforcement=CLUSTER)
        is None
    )


def test_drift_candidates_follow_the_scope() -> None:
    pods = [
        {"metadata": {"name": "p", "namespace": ns}, "status": {"phase": "Running"}}
        for ns in ("plain", "warned", "cert-manager")
    ]
    labels = {"plain": {}, "warned": {scopes.ENFORCE_LABEL: "warn"}, "cert-manager": {}}
    chosen = drift.candidates(pods, labels, own_namespace=OWN, enforcement=CLUSTER)
    assert [(pod["metadata"]["namespace"], mode) for pod, mode in chosen] == [
        ("plain", ENFORCE),
        ("warned", WARN),
    ]
    chosen = drift.candidates(pods, labels, own_namespace=OWN, enforcement=NAMESPACED)
    assert [(pod["metadata"]["namespace"], mode) for pod, mode in chosen] == [("warned", WARN)]


def _matches(selector: dict[str, Any], name: str, labels: dict[str, str]) -> bool:
    """How the apiserver evaluates a namespaceSelector: kubernetes.io/metadata.name is always
    set; NotIn and DoesNotExist match a namespace without the key."""
    labels = {**labels, "kubernetes.io/metadata.name": name}
    parsed = selectors.LabelSelector.model_validate(selector)
    return selectors.matches(parsed, labels)


@pytest.mark.parametrize(("namespace", "labels", "namespaced", "cluster"), CASES)
def test_webhook_selectors_choose_what_the_handler_chooses(
    namespace: str,
    labels: dict[str, str],
    namespaced: findings.Mode | None,
    cluster: findings.Mode | None,
) -> None:
    if not namespace:
        return  # every object of a namespaced resource has a namespace
    for enforcement, expected in ((NAMESPACED, namespaced), (CLUSTER, cluster)):
        config = webhookconfigs.validating(
            "https://x", "", own_namespace=OWN, enforcement=enforcement
        )
        selected = {
            findings.Mode(hook["name"].split(".", 1)[0])
            for hook in config["webhooks"]
            if _matches(hook["namespaceSelector"], namespace, labels)
        }
        # Label values are matched case-sensitively by the apiserver: "Enforce" is not among
        # the namespaced selector's values, so such a namespace gets no webhook at all there.
        value = labels.get(scopes.ENFORCE_LABEL, "")
        if enforcement is NAMESPACED and value != value.lower():
            assert selected == set()
            continue
        assert selected == ({expected} if expected else set()), enforcement


def test_the_cluster_scope_selector_is_not_in_warn() -> None:
    config = webhookconfigs.validating("https://x", "", own_namespace=OWN, enforcement=CLUSTER)
    enforce, warn = config["webhooks"]
    assert enforce["namespaceSelector"]["matchExpressions"][0] == {
        "key": scopes.ENFORCE_LABEL,
        "operator": "NotIn",
        "values": ["warn"],
    }
    assert warn["namespaceSelector"]["matchExpressions"][0]["values"] == ["warn"]
    excluded = enforce["namespaceSelector"]["matchExpressions"][2]["values"]
    assert excluded == sorted([*scopes.NEVER_JUDGED, OWN, "cert-manager"])


def test_the_handler_never_judges_an_excluded_namespace() -> None:
    """Even when a webhook is misconfigured to send it: the double check in the handler."""
    unpinned = reviews.validate(
        review(
            namespace="cert-manager",
            object={
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "a", "image": "a:1"}]},
            },
        )
    )
    for enforcement, allowed in ((scopes.NAMESPACED, False), (CLUSTER, True)):
        pipeline = admissions.Pipeline(
            active_gates=(pinning.PinningGate(),), own_namespace=OWN, enforcement=enforcement
        )
        response = asyncio.run(pipeline.review(unpinned, gates.Phase.VALIDATE, ENFORCE))
        assert response["response"]["allowed"] is allowed, enforcement


# -- muster run --------------------------------------------------------------------------------


def _settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> runtime.OperatorSettings | None:
    code, seen = commandline.run_settings(tmp_path, monkeypatch, *args)
    if code != 0:
        return None
    (settings,) = seen
    return settings


def test_muster_run_takes_the_scope_and_the_exclusions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = _settings(tmp_path, monkeypatch)
    assert default is not None and default.enforcement == scopes.NAMESPACED
    chosen = _settings(
        tmp_path,
        monkeypatch,
        "--enforcement-scope=cluster",
        "--exclude-namespace=cert-manager",
        "--exclude-namespace=monitoring",
    )
    assert chosen is not None
    assert chosen.enforcement == scopes.Enforcement.of("cluster", ["cert-manager", "monitoring"])
    # The pipeline and the controllers are built from these very settings.
    assert admissions.Pipeline([], enforcement=chosen.enforcement).enforcement is chosen.enforcement


def test_muster_run_refuses_an_unknown_scope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _settings(tmp_path, monkeypatch, "--enforcement-scope=global") is None
    assert "invalid choice: 'global'" in capsys.readouterr().err
    monkeypatch.setenv("MUSTER_ENFORCEMENT_SCOPE", "everywhere")
    assert _settings(tmp_path, monkeypatch) is None
    assert "--enforcement-scope 'everywhere' is not one of: namespaced, cluster" in (
        capsys.readouterr().err
    )
