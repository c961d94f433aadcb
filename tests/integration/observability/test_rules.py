"""Muster's alerting rules, checked and unit-tested by the real promtool."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests import paths, peers
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

RULES = paths.REPO / "charts" / "muster" / "rules" / "muster.rules.yaml"
TESTS = Path(__file__).with_name("muster.rules.test.yaml")


def alerts() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"]}


def test_promtool_accepts_the_rules() -> None:
    result = peers.run_tool("promtool", "check", "rules", str(RULES))
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = peers.run_tool("promtool", "test", "rules", str(TESTS))
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == alerts()
    assert quiet == alerts()


RUNBOOKS = "https://github.com/muster-dev/muster/blob/main/docs/observability.md#"
# Caused and fixed by the workloads' owners: routed to them, never to the pager.
USER_CAUSED = {"MusterDenialSpike", "MusterRevokedModelInUse"}


def test_every_alert_has_a_summary_and_a_runbook_in_the_docs() -> None:
    docs = (paths.REPO / "docs" / "observability.md").read_text()
    headings = {line[4:].strip() for line in docs.splitlines() if line.startswith("### ")}
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert rule["annotations"]["summary"]
            assert rule["annotations"]["runbook"]
            assert f"| `{name}` |" in docs
            # Its own runbook section, and the URL of that section's anchor.
            assert rule["annotations"]["runbook_url"] == RUNBOOKS + name.lower(), name
            assert name in headings, f"docs/observability.md has no '### {name}' runbook"


def test_user_caused_alerts_route_apart_from_the_pager() -> None:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            labels = rule["labels"]
            if rule["alert"] in USER_CAUSED:
                assert labels["audience"] == "workload-owners", rule["alert"]
                assert labels["severity"] in {"info", "warning"}, rule["alert"]
            else:
                assert labels["audience"] == "platform", rule["alert"]


def test_muster_alerts_keep_the_installation_apart() -> None:
    """Aggregated by the scrape target's namespace and job: two installations never add up,
    and the alert names the one to look at."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            expression = " ".join(rule["expr"].split())
            if "apiserver_" in expression:
                assert "by (name)" in expression, rule["alert"]
                continue
            for aggregation in re.findall(
                r"\b(?:sum|min|max|count)\b(?: by \(([^)]*)\))?", expression
            ):
                grouped = {label.strip() for label in aggregation.split(",")}
                assert {"namespace", "job"} <= grouped, (rule["alert"], aggregation)


def test_the_chart_ships_the_same_rules_and_dashboards() -> None:
    docs = rendering.documents(
        rendering.template(f"--values={rendering.CHART / 'ci' / 'monitoring-values.yaml'}")
    )
    rule = rendering.one(docs, "PrometheusRule")
    shipped = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    source = yaml.safe_load(RULES.read_text())
    for group in source["groups"]:
        for expected in group["rules"]:
            assert shipped[expected["alert"]] == expected
    assert set(shipped) == alerts() | {"MusterDown"}
    dashboards = rendering.one(docs, "ConfigMap")
    for path in (rendering.CHART / "dashboards").glob("*.json"):
        assert json.loads(dashboards["data"][path.name]) == json.loads(path.read_text())
    (deployment,) = rendering.by_kind(docs, "Deployment")
    (operator,) = [c for c in rendering.containers(deployment) if c["name"] == "operator"]
    assert "--metrics-port=8080" in operator["args"]
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in operator["ports"]


def test_the_dashboard_configmap_carries_the_grafana_folder() -> None:
    docs = rendering.documents(
        rendering.template(
            f"--values={rendering.CHART / 'ci' / 'monitoring-values.yaml'}",
            "--set=metrics.grafanaDashboard.folder=Platform security",
            "--set=metrics.grafanaDashboard.annotations.team=platform",
        )
    )
    dashboards = rendering.one(docs, "ConfigMap")
    assert dashboards["metadata"]["annotations"] == {
        "grafana_folder": "Platform security",
        "team": "platform",
    }
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    plain = rendering.one(
        rendering.documents(
            rendering.template(f"--values={rendering.CHART / 'ci' / 'monitoring-values.yaml'}")
        ),
        "ConfigMap",
    )
    assert "annotations" not in plain["metadata"]


def test_the_dashboard_scopes_every_muster_query_by_cluster_job_and_pod() -> None:
    for path in (rendering.CHART / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        names = [variable["name"] for variable in dashboard["templating"]["list"]]
        assert names == ["datasource", "cluster", "job", "pod"]
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expression = target["expr"]
                assert "[5m]" not in expression, (panel["title"], expression)
                for selector in re.findall(r"\b(?:muster|process)_[a-z_]+\{[^}]*\}", expression):
                    assert 'job=~"$job"' in selector and 'pod=~"$pod"' in selector, selector
                for selector in re.findall(r"\bapiserver_[a-z_]+\{[^}]*\}", expression):
                    assert 'cluster=~"$cluster"' in selector, selector
