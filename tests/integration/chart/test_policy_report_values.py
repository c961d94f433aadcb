"""The chart's PolicyReport values: the operator's flags, RBAC limited to the reports named
``muster`` and only while enabled, and the optional CRDs, the vendored files as they are."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests import paths
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

GROUP = "wgpolicyk8s.io"


def _operator_args(docs: list[dict[str, Any]]) -> list[str]:
    (operator,) = [
        c
        for d in rendering.by_kind(docs, "Deployment")
        for c in rendering.containers(d)
        if (c.get("args") or [""])[0] == "run"
    ]
    return [str(arg) for arg in operator["args"]]


def _report_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        rule
        for role in rendering.by_kind(docs, "ClusterRole")
        for rule in role.get("rules") or ()
        if GROUP in rule.get("apiGroups", ())
    ]


def _crds(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in rendering.by_kind(docs, "CustomResourceDefinition")
        if d["spec"]["group"] == GROUP
    ]


def test_by_default_reports_are_written_with_rights_on_their_own_name_only() -> None:
    docs = rendering.documents(rendering.template("--include-crds"))
    args = _operator_args(docs)
    assert "--policy-reports" in args and "--no-audit-namespaces" in args
    assert "--policy-report-max-results=1000" in args
    rules = _report_rules(docs)
    assert rules == [
        {
            "apiGroups": [GROUP],
            "resources": ["policyreports", "clusterpolicyreports"],
            "verbs": ["list", "create"],
        },
        {
            "apiGroups": [GROUP],
            "resources": ["policyreports", "clusterpolicyreports"],
            "resourceNames": ["muster"],
            "verbs": ["get", "update", "delete"],
        },
    ]
    assert _crds(docs) == []  # another tool (Kyverno) usually owns them


def test_turned_off_there_is_neither_flag_nor_right() -> None:
    docs = rendering.documents(rendering.template("--set", "policyReports.enabled=false"))
    assert "--no-policy-reports" in _operator_args(docs)
    assert _report_rules(docs) == []


def test_the_optional_crds_are_the_vendored_files_kept_on_uninstall() -> None:
    docs = rendering.documents(rendering.template("--set", "policyReports.installCRDs=true"))
    rendered = {d["metadata"]["name"]: d for d in _crds(docs)}
    folder = paths.FIXTURES / "crds" / "wg-policy-prototypes-v1alpha2"
    vendored = [yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))]
    assert sorted(rendered) == sorted(crd["metadata"]["name"] for crd in vendored)
    for crd in vendored:
        found = rendered[crd["metadata"]["name"]]
        annotations = found["metadata"].pop("annotations")
        assert annotations.pop("helm.sh/resource-policy") == "keep"
        assert annotations == crd["metadata"].pop("annotations")
        crd["metadata"].pop("creationTimestamp")
        assert found == crd
        served = {v["name"] for v in found["spec"]["versions"] if v["served"]}
        assert "v1alpha2" in served  # what Muster writes, Kyverno and Policy Reporter read


def test_the_bound_must_be_positive() -> None:
    said = rendering.refusal("--set", "policyReports.maxResults=0")
    assert "maxResults" in said
