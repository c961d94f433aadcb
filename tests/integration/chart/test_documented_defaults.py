"""What the operations pages say about the chart, checked against what it renders: Secrets only
read by name, no NetworkPolicy unless asked, the plain manifests needing cert-manager, host
networking for clusters whose control plane cannot reach pod IPs."""

from __future__ import annotations

import pytest
import yaml

from tests.integration.chart import rendering
from tests.integration.chart.rendering import ROOT

pytestmark = pytest.mark.integration


def test_secrets_are_only_read_by_name() -> None:
    docs = rendering.documents(rendering.template())
    rules = [
        rule
        for role in rendering.by_kind(docs, "ClusterRole") + rendering.by_kind(docs, "Role")
        for rule in role.get("rules", [])
        if "secrets" in rule.get("resources", []) or "*" in rule.get("resources", [])
    ]
    assert rules, "the image gate reads the keys and pull secrets a policy or pod names"
    assert all(rule["verbs"] == ["get"] for rule in rules), rules
    readme = (ROOT / "charts/muster/README.md").read_text()
    assert "only by name (`get`, cluster-wide, never `list` or `watch`)" in readme
    assert "No Secrets" not in readme


def test_no_network_policy_unless_enabled() -> None:
    assert rendering.by_kind(rendering.documents(rendering.template()), "NetworkPolicy") == []
    enabled = rendering.documents(rendering.template("--set=networkPolicy.enabled=true"))
    assert len(rendering.by_kind(enabled, "NetworkPolicy")) == 1
    values = yaml.safe_load((rendering.CHART / "values.yaml").read_text())
    assert values["networkPolicy"]["enabled"] is False
    operations = (ROOT / "docs/operations.md").read_text()
    assert "a NetworkPolicy\nonly with `networkPolicy.enabled`" in operations


def test_the_plain_manifests_take_their_certificate_from_cert_manager() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests/muster.yaml").read_text()) if d]
    certificates = [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]
    assert {d["kind"] for d in certificates} >= {"Certificate", "Issuer"}
    assert not [d for d in docs if d["kind"] == "Secret" and d.get("type") == "kubernetes.io/tls"]
    for page in ("README.md", "docs/operations.md"):
        assert "cert-manager" in (ROOT / page).read_text()


def test_host_networking_is_off_by_default_and_a_boolean() -> None:
    default = rendering.one(rendering.documents(rendering.template()), "Deployment")
    assert "hostNetwork" not in default["spec"]["template"]["spec"]
    on = rendering.one(
        rendering.documents(rendering.template("--set=operator.hostNetwork=true")), "Deployment"
    )
    spec = on["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    # The webhook listens on webhook.port, on the node's address: the port the firewall opens.
    ports = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c["ports"]}
    assert ports["webhook"] == 9443
    assert "hostNetwork" in rendering.refusal("--set-string=operator.hostNetwork=yes")
