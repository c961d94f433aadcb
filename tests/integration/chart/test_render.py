"""helm lint and helm template: every scenario renders, the guards hold, nothing drifts."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from muster.app import webhookconfigs
from tests import peers
from tests.integration.chart import rendering
from tests.integration.chart.rendering import CHART, ROOT, SCENARIOS

pytestmark = pytest.mark.integration

SCENARIO_IDS = ["default", *(path.stem for path in SCENARIOS)]
SCENARIO_ARGS = [[], *([f"--values={path}"] for path in SCENARIOS)]


@pytest.mark.parametrize("args", SCENARIO_ARGS, ids=SCENARIO_IDS)
def test_lint_and_template(args: list[str]) -> None:
    rendering.helm("lint", str(CHART), "--strict", "--kube-version", rendering.KUBE_VERSION, *args)
    docs = rendering.documents(rendering.template(*args))
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    rendering.one(docs, "ValidatingWebhookConfiguration")
    rendering.one(docs, "MutatingWebhookConfiguration")
    rendering.one(docs, "Deployment")


def _hardened(pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
    pod = pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]


def test_defaults_are_safe() -> None:
    docs = rendering.documents(rendering.template())
    deployment = rendering.one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (container,) = pod["containers"]
    _hardened(pod, container)
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert ":latest" not in container["image"]
    assert container["image"].endswith(":0.1.0")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "webhook", "scheme": "HTTPS"}
    args = container["args"]
    assert args[0] == "run"
    assert "--tls-cert-file=/etc/muster/webhook-tls/tls.crt" in args
    assert "--tls-key-file=/etc/muster/webhook-tls/tls.key" in args
    assert "--namespace=muster-system" in args
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-tls")
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "muster-webhook-tls"
    assert rendering.one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    # Off unless asked.
    kinds = {doc["kind"] for doc in docs}
    assert not kinds & {"DaemonSet", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"}
    assert not rendering.by_kind(docs, "ConfigMap")
    # The hook Job that deletes the webhooks first, and the helm test pod, are hooks.
    job = rendering.one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    _hardened(job["spec"]["template"]["spec"], job["spec"]["template"]["spec"]["containers"][0])
    test_pod = rendering.one(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    _hardened(test_pod["spec"], test_pod["spec"]["containers"][0])


# Each component's own security context values: (values key, kind, container).
COMPONENTS = [
    ("operator", "Deployment", "operator"),
    ("nodeAgent", "DaemonSet", "node-agent"),
    ("hooks.preDelete", "Job", "delete-webhooks"),
    ("tests", "Pod", "readyz"),
]


@pytest.mark.parametrize(("key", "kind", "name"), COMPONENTS, ids=[c[0] for c in COMPONENTS])
def test_each_component_has_its_own_security_context(key: str, kind: str, name: str) -> None:
    docs = rendering.documents(
        rendering.template(
            "--set=nodeAgent.enabled=true",
            f"--set={key}.podSecurityContext.runAsUser=4242",
            f"--set={key}.securityContext.seccompProfile.type=Localhost",
            f"--set={key}.securityContext.seccompProfile.localhostProfile=muster.json",
        )
    )
    changed = 0
    for doc in docs:
        if doc["kind"] not in {k for _, k, _ in COMPONENTS}:
            continue
        spec = doc["spec"]["template"]["spec"] if "template" in doc["spec"] else doc["spec"]
        (container,) = spec["containers"]
        mine = doc["kind"] == kind
        assert (spec["securityContext"]["runAsUser"] == 4242) is mine, doc["kind"]
        assert ("seccompProfile" in container["securityContext"]) is mine, doc["kind"]
        if mine:
            assert container["name"] == name
            assert container["securityContext"]["seccompProfile"] == {
                "type": "Localhost",
                "localhostProfile": "muster.json",
            }
            # The rest of the hardened defaults stay.
            _hardened(spec, container)
            changed += 1
    assert changed == 1


def test_rbac_is_least_privilege() -> None:
    docs = rendering.documents(rendering.template())
    operator_role = next(
        doc for doc in rendering.by_kind(docs, "ClusterRole") if doc["metadata"]["name"] == "muster"
    )
    for rule in operator_role["rules"]:
        # Secrets only by name (the image gate's pull secrets and policy keys), never listed.
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"], rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        writes = set(rule["verbs"]) - {"get", "list", "watch"}
        if writes:
            own_status = rule["apiGroups"] == ["muster.dev"] and all(
                resource.endswith("/status") for resource in rule["resources"]
            )
            # Nodes: the GPU stack controller writes its labels (and the node agent its
            # attestation annotation) on them; nothing else is written.
            labels_nodes = rule["resources"] == ["nodes"] and writes == {"patch"}
            # Resources Muster generates itself: ImageScans (one per scanned digest) and
            # WorkloadBOMs (one per running workload); created and patched, never deleted.
            own_records = (
                rule["apiGroups"] == ["muster.dev"]
                and set(rule["resources"]) <= {"imagescans", "workloadboms"}
                and writes <= {"create", "patch"}
            )
            # PolicyReports: created under the name muster (create cannot be limited by name);
            # replaced and deleted only by that name (the rule with resourceNames).
            own_reports = (
                rule["apiGroups"] == ["wgpolicyk8s.io"]
                and set(rule["resources"]) <= {"policyreports", "clusterpolicyreports"}
                and writes == {"create"}
            )
            assert (
                rule["resources"] == ["events"]
                or rule.get("resourceNames")
                or own_status
                or labels_nodes
                or own_records
                or own_reports
            ), rule
    assert not rendering.by_kind(docs, "Role")


def test_muster_objects_are_readable_by_viewers_unless_turned_off() -> None:
    docs = rendering.documents(rendering.template())
    (view,) = [
        doc
        for doc in rendering.by_kind(docs, "ClusterRole")
        if doc["metadata"]["name"] == "muster-view"
    ]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    (rule,) = view["rules"]
    assert rule["apiGroups"] == ["muster.dev"] and rule["verbs"] == ["get", "list", "watch"]
    assert set(rule["resources"]) == {
        "imagepolicies",
        "gpustackpolicies",
        "models",
        "modelpolicies",
        "datasets",
        "datasetpolicies",
        "imagescans",
        "workloadboms",
    }
    off = rendering.documents(rendering.template("--set", "rbac.aggregateToView=false"))
    assert "muster-view" not in {
        doc["metadata"]["name"] for doc in rendering.by_kind(off, "ClusterRole")
    }


def _webhooks(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    hooks: list[dict[str, Any]] = rendering.one(docs, kind)["webhooks"]
    return hooks


def test_webhook_sources_do_not_drift() -> None:
    """files/webhooks.yaml is what hack/generate-webhooks.py writes from the code today."""
    check = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "generate-webhooks.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0, f"run python hack/generate-webhooks.py:\n{check.stderr}"
    committed = yaml.safe_load((CHART / "files" / "webhooks.yaml").read_text())
    assert committed == webhookconfigs.chart_sources()


def test_a_missing_webhook_sources_file_stops_the_render(tmp_path: Path) -> None:
    chart = tmp_path / "muster"
    shutil.copytree(CHART, chart)
    (chart / "files" / "webhooks.yaml").write_text("not: [the, sources]\n")
    result = rendering.helm(
        "template", "muster", str(chart), "--kube-version", rendering.KUBE_VERSION, check=False
    )
    assert result.returncode != 0, result.stdout
    assert "files/webhooks.yaml is missing or unreadable" in result.stderr


@pytest.mark.parametrize(
    ("kind", "build"),
    [
        ("ValidatingWebhookConfiguration", webhookconfigs.validating),
        ("MutatingWebhookConfiguration", webhookconfigs.mutating),
    ],
)
def test_webhooks_follow_the_same_rules_as_the_operator(kind: str, build: Any) -> None:
    """The chart's rendered webhooks and the development ones (muster.app.webhookconfigs)
    agree: the chart's generated sources are read the way the code uses them."""
    docs = rendering.documents(rendering.template())
    expected = build("https://unused", "", own_namespace="muster-system")["webhooks"]
    # The record of namespace mode changes is compared in test_namespace_guard.py.
    rendered = [h for h in _webhooks(docs, kind) if h["name"] != webhookconfigs.NAMESPACE_MODES]
    assert [hook["name"] for hook in rendered] == [hook["name"] for hook in expected]
    for got, want in zip(rendered, expected, strict=True):
        for field in (
            "rules",
            "failurePolicy",
            "sideEffects",
            "admissionReviewVersions",
            "timeoutSeconds",
            "namespaceSelector",
        ):
            assert got[field] == want[field], (got["name"], field)
        assert got.get("reinvocationPolicy") == want.get("reinvocationPolicy")
        assert got["clientConfig"]["service"] == {
            "name": "muster",
            "namespace": "muster-system",
            "path": want["clientConfig"]["url"].removeprefix("https://unused"),
            "port": 443,
        }
        conditions = {c["name"]: c["expression"] for c in got["matchConditions"]}
        # The chart's own (values-driven) conditions, plus the operator's (the mutating
        # webhooks' may-mutate), which must be the very same text.
        chart_only = {
            "not-from-nodes": webhookconfigs.NOT_FROM_NODES,
            "spec-changed-on-update": webhookconfigs.SPEC_CHANGED_ON_UPDATE,
        }
        shared = {c["name"]: c["expression"] for c in want.get("matchConditions", [])}
        assert conditions == {**chart_only, **shared}
        assert ("may-mutate" in shared) == (kind == "MutatingWebhookConfiguration")


def test_webhook_values() -> None:
    docs = rendering.documents(
        rendering.template(f"--values={CHART / 'ci' / 'warn-only-values.yaml'}")
    )
    (hook,) = _webhooks(docs, "ValidatingWebhookConfiguration")
    assert hook["name"] == "warn.validate.pods.muster.dev"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == 5
    expressions = hook["namespaceSelector"]["matchExpressions"]
    assert {"key": "team", "operator": "In", "values": ["ml"]} in expressions
    excluded = next(e for e in expressions if e["key"] == "kubernetes.io/metadata.name")
    assert "monitoring" in excluded["values"]
    assert [c["name"] for c in hook["matchConditions"]] == ["not-from-nodes"]
    assert not rendering.by_kind(docs, "Job")


def test_needless_mutations_can_be_sent_anyway() -> None:
    docs = rendering.documents(rendering.template("--set=webhook.skipNeedlessMutations=false"))
    for hook in _webhooks(docs, "MutatingWebhookConfiguration"):
        assert "may-mutate" not in [c["name"] for c in hook["matchConditions"]]


def test_cert_manager_injects_the_ca() -> None:
    docs = rendering.documents(
        rendering.template(f"--values={CHART / 'ci' / 'cert-manager-values.yaml'}")
    )
    assert not rendering.by_kind(docs, "Secret")
    certificates = {doc["metadata"]["name"]: doc for doc in rendering.by_kind(docs, "Certificate")}
    serving = certificates["muster-webhook"]
    assert serving["spec"]["secretName"] == "muster-webhook-tls"
    assert "muster.muster-system.svc" in serving["spec"]["dnsNames"]
    assert certificates["muster-ca"]["spec"]["isCA"] is True
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = rendering.one(docs, kind)
        annotation = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert annotation == "muster-system/muster-webhook"
        assert all("caBundle" not in hook["clientConfig"] for hook in config["webhooks"])


def test_generated_certificates_serve_the_service() -> None:
    docs = rendering.documents(rendering.template())
    secret = rendering.one(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "muster.muster-system.svc" in names.get_values_for_type(x509.DNSName)
    assert cert.issuer == ca.subject
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 360 <= lifetime.days <= 366  # a year, not a century
    bundle = _webhooks(docs, "ValidatingWebhookConfiguration")[0]["clientConfig"]["caBundle"]
    assert base64.b64decode(bundle) == base64.b64decode(secret["data"]["ca.crt"])


def test_node_agent_only_on_gpu_nodes() -> None:
    docs = rendering.documents(
        rendering.template(f"--values={CHART / 'ci' / 'node-agent-values.yaml'}")
    )
    daemonset = rendering.one(docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (container,) = pod["containers"]
    assert container["args"][0] == "node-agent"
    _hardened(pod, container)
    # Exactly what `muster node-agent` reads: the loaded driver and module versions, the running
    # kernel's release and its modules (digests), the driver libraries (digests, NVML), the
    # toolkit binaries (versions) and the toolkit's config folder (does it honour
    # NVIDIA_VISIBLE_DEVICES?). Each mounted read-only at the same path under /host.
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {
        "proc-driver-nvidia": "/proc/driver/nvidia",
        "sys-module-nvidia": "/sys/module/nvidia",
        "kernel-release": "/proc/sys/kernel/osrelease",
        "kernel-modules": "/lib/modules",
        "driver-libraries": "/usr/lib/x86_64-linux-gnu",
        "toolkit-binaries": "/usr/bin",
        "toolkit-config": "/etc/nvidia-container-runtime",
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for name, path in host_paths.items():
        assert mounts[name] == {"name": name, "mountPath": f"/host{path}", "readOnly": True}
    assert container["args"][:2] == ["node-agent", "--host-root=/host"]
    assert "--toolkit-config=/etc/nvidia-container-runtime/config.toml" in container["args"]
    # Its own ServiceAccount, allowed only to get and patch Nodes, confined to its own Node.
    account = f"{daemonset['metadata']['name']}"
    assert pod["serviceAccountName"] == account
    (role,) = [
        r for r in rendering.by_kind(docs, "ClusterRole") if r["metadata"]["name"] == account
    ]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    (binding,) = [
        b for b in rendering.by_kind(docs, "ClusterRoleBinding") if b["metadata"]["name"] == account
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "muster-system"}
    ]
    # Its own policy, beside the chart's other guards (namespaces, trust anchors).
    (policy,) = [
        p
        for p in rendering.by_kind(docs, "ValidatingAdmissionPolicy")
        if p["metadata"]["name"] == account
    ]
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        f'request.userInfo.username == "system:serviceaccount:muster-system:{account}"'
    )
    bindings = rendering.by_kind(docs, "ValidatingAdmissionPolicyBinding")
    assert account in [b["spec"]["policyName"] for b in bindings]


def test_replicas_one_has_no_disruption_budget() -> None:
    docs = rendering.documents(
        rendering.template(f"--values={CHART / 'ci' / 'single-replica-values.yaml'}")
    )
    assert rendering.one(docs, "Deployment")["spec"]["replicas"] == 1
    assert not rendering.by_kind(docs, "PodDisruptionBudget")
    assert not rendering.by_kind(docs, "ClusterKopfPeering")


def test_monitoring_renders_when_asked() -> None:
    docs = rendering.documents(
        rendering.template(f"--values={CHART / 'ci' / 'monitoring-values.yaml'}")
    )
    rendering.one(docs, "ServiceMonitor")
    rule = rendering.one(docs, "PrometheusRule")
    assert rule["spec"]["groups"][0]["rules"]
    dashboards = rendering.one(docs, "ConfigMap")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "muster.json" in dashboards["data"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "operator.replica=3"], "additional properties 'replica' not allowed"),
        (["--set", "webhook.tls.validityDay=3"], "additional properties 'validityDay'"),
        (["--set", "operator.replicas=0"], "/operator/replicas"),
        (["--set", "webhook.modes={enforce,audit}"], "/webhook/modes/1"),
        (["--set", "image.tag=latest"], "/image/tag"),
        (["--set", "webhook.timeoutSeconds=31"], "/webhook/timeoutSeconds"),
        (["--set", "operator.egress.registryAlow={x}"], "additional properties 'registryAlow'"),
        (["--set", "operator.scanning.cache=x"], "additional properties 'cache' not allowed"),
        (["--set", "operator.scanning.concurrency=0"], "/operator/scanning/concurrency"),
        (["--set", "operator.keepBoms=yes"], "/operator/keepBoms"),
        (["--set", "nodeAgent.securityContext.privileged=yes"], "/nodeAgent/securityContext"),
        (["--set", "tests.securityContext.runAsRoot=true"], "additional properties 'runAsRoot'"),
        (
            ["--set", "hooks.preDelete.podSecurityContext.seccompProfile.type=None"],
            "/hooks/preDelete/podSecurityContext/seccompProfile/type",
        ),
        (["--set", "operator.podSecurityContext.runAsUser=-1"], "/operator/podSecurityContext"),
    ],
)
def test_schema_rejects_bad_values(args: list[str], message: str) -> None:
    assert message in rendering.refusal(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "operator.replicas=0"], "operator.replicas must be at least 1"),
        (["--set", "webhook.modes={enforce,audit}"], 'unknown mode "audit"'),
        (["--set", "image.tag=latest"], 'must not be "latest"'),
        (["--set", "webhook.tls.renewBeforeDays=400"], "renewBeforeDays must be less"),
        (
            ["--set", "nodeAgent.enabled=true", "--set", "nodeAgent.securityContext=null"],
            "nodeAgent.securityContext is required",
        ),
        (["--set", "tests.podSecurityContext=null"], "tests.podSecurityContext is required"),
    ],
)
def test_guards_hold_without_the_schema(args: list[str], message: str) -> None:
    assert message in rendering.refusal(*args, schema=False)


def test_old_kubernetes_is_refused() -> None:
    """Chart.yaml's kubeVersion is the floor docs/compatibility.md states; helm refuses below."""
    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    assert floor == ">=1.30.0-0"
    assert "**1.30 or newer**" in (ROOT / "docs" / "compatibility.md").read_text()
    refused = rendering.refusal(kube_version="1.29.0")
    assert "chart requires kubeVersion: >=1.30.0-0" in refused
    assert "incompatible with Kubernetes v1.29.0" in refused
    for accepted in ("1.30.0", "1.37.0-alpha.1"):
        rendering.template("--kube-version", accepted)


def test_manifests_do_not_drift_from_the_chart() -> None:
    rendered = subprocess.run(
        ["bash", str(ROOT / "hack" / "render-manifests.sh"), "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "HELM": str(peers.tool("helm"))},
    ).stdout
    committed = (ROOT / "manifests" / "muster.yaml").read_text()
    assert rendered == committed, "manifests/muster.yaml is stale: run hack/render-manifests.sh"
    docs = rendering.documents(rendered)
    assert not any("helm.sh/hook" in (doc["metadata"].get("annotations") or {}) for doc in docs), (
        "plain manifests must not carry helm hooks"
    )
    assert not rendering.by_kind(docs, "Secret"), "plain manifests must not carry key material"


def test_readme_values_table_does_not_drift() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "chart-values-table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_values_table_flags_undocumented_values(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values.yaml").write_text("# -- documented\na: 1\nb:\n  c: 2\n")
    (chart / "README.md").write_text(
        "<!-- values-table:start (generated by hack/chart-values-table.py) -->\n"
        "<!-- values-table:end -->\n"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "chart-values-table.py"), f"--chart={chart}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert "b.c has no `# --` comment" in result.stderr
    assert "| `a` | int | `1` | documented |" in (chart / "README.md").read_text()
