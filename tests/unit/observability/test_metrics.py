"""The metrics registry: every series a dashboard needs exists, labels stay bounded."""

from __future__ import annotations

import re
from pathlib import Path

import prometheus_client
import pytest
from cryptography import x509
from prometheus_client import parser

from muster.app import areas
from muster.kernel import findings, gates, observations, pki, subjects
from muster.platform import metrics, registries

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[3] / "docs" / "observability.md"


def families(m: metrics.Metrics) -> dict[str, prometheus_client.Metric]:
    return {f.name: f for f in parser.text_string_to_metric_families(m.exposition().decode())}


def pod(namespace: str, name: str) -> subjects.Subject:
    return subjects.Subject(
        uid="u",
        api_version="admission.k8s.io/v1",
        operation="CREATE",
        group="",
        resource="pods",
        subresource="",
        kind="Pod",
        namespace=namespace,
        name=name,
        object={},
        templates=(),
        user={},
        mode=findings.Mode.ENFORCE,
        dry_run=False,
    )


def test_series_exist_at_zero_before_anything_happens() -> None:
    found = families(metrics.Metrics(labels=areas.metric_labels()))
    requests = found["muster_admission_requests"].samples
    assert len([s for s in requests if s.name.endswith("_total")]) == 2 * 2 * 3
    states = {s.labels["state"]: s.value for s in found["muster_gpu_nodes"].samples}
    assert states == {"compliant": 0, "noncompliant": 0, "unknown": 0}
    assert found["muster_pods_using_revoked_models"].samples[0].value == 0
    caches = {s.labels["cache"] for s in found["muster_verification_cache_requests"].samples}
    assert (
        caches
        == {"signatures", "image-configs", "datasets", "models"}
        == set(areas.metric_labels().caches)
    )


def test_decisions_count_by_operation_phase_and_decision_without_pod_names() -> None:
    m = metrics.Metrics(namespaces=observations.BoundedLabel(limit=1))
    denial = findings.Finding("digest-pinning", "ImageNotPinned", "container c", "not pinned")
    verdict = findings.Verdict(denials=(denial,))
    for namespace in ("team-a", "team-b", "team-a"):
        m.admission(pod(namespace, "secret-pod-name"), gates.Phase.VALIDATE, verdict, {"x": 0.004})
    m.admission(pod("team-a", "p"), gates.Phase.MUTATE, verdict, {"x": 0.002})
    text = m.exposition().decode()
    assert "secret-pod-name" not in text
    found = families(m)
    violations = {
        s.labels["resource_namespace"]: s.value
        for s in found["muster_violations"].samples
        if s.name.endswith("_total")
    }
    assert violations == {"team-a": 2, "other": 1}  # mutation does not count twice
    denied = [
        s.value
        for s in found["muster_admission_requests"].samples
        if s.labels == {"operation": "CREATE", "phase": "validate", "decision": "denied"}
        and s.name.endswith("_total")
    ]
    assert denied == [3]
    buckets = {
        s.labels["le"]: s.value
        for s in found["muster_admission_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["gate"] == "x"
    }
    assert (buckets["0.0025"], buckets["0.005"]) == (1, 4)


def test_images_passed_unsigned_are_counted_by_policy_not_as_violations() -> None:
    m = metrics.Metrics()
    passed = findings.Finding(
        "image-signature",
        "ImagePassedUnsigned",
        'container "istio-proxy"',
        "image 'docker.io/istio/proxyv2@sha256:...' is let in without a signature",
        mode=findings.Mode.WARN,
        policy=findings.PolicyRef(kind="ImagePolicy", name="mesh"),
    )
    verdict = findings.Verdict(warnings=(passed,))
    m.admission(pod("team", "p"), gates.Phase.VALIDATE, verdict, {})
    m.admission(pod("team", "p"), gates.Phase.MUTATE, verdict, {})  # counted at validation
    found = families(m)
    (sample,) = [
        s for s in found["muster_images_passed_unsigned"].samples if s.name.endswith("_total")
    ]
    assert (sample.labels, sample.value) == ({"policy": "mesh", "resource_namespace": "team"}, 1)
    assert not [s for s in found["muster_violations"].samples if s.name.endswith("_total")]


def test_gate_errors_are_counted() -> None:
    m = metrics.Metrics()
    timeout = findings.Finding("signatures", "DeadlineExceeded", "gate signatures", "slow")
    m.admission(pod("a", "p"), gates.Phase.VALIDATE, findings.Verdict(denials=(timeout,)), {})
    samples = families(m)["muster_admission_errors"].samples
    assert any(
        s.labels == {"gate": "signatures", "reason": "DeadlineExceeded"} and s.value == 1
        for s in samples
    )


def test_registry_hosts_are_bounded_and_outcomes_named() -> None:
    m = metrics.Metrics(registries=observations.BoundedLabel(limit=1))
    m.registry_request("ghcr.io", registries.request_outcome(200), 0.01)
    m.registry_request("quay.io", registries.request_outcome(503), 0.02)
    m.registry_request("ghcr.io", "made-up", 0.02)
    counts = {
        (s.labels["registry"], s.labels["outcome"]): s.value
        for s in families(m)["muster_registry_requests"].samples
        if s.name.endswith("_total")
    }
    assert counts == {
        ("ghcr.io", "success"): 1,
        ("other", "server_error"): 1,
        ("ghcr.io", "error"): 1,
    }


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "success"),
        (404, "not_found"),
        (401, "unauthorized"),
        (429, "throttled"),
        (502, "server_error"),
        (400, "error"),
    ],
)
def test_request_outcomes(status: int, outcome: str) -> None:
    assert registries.request_outcome(status) == outcome


def test_certificate_expiry_is_read_from_the_serving_certificate(tmp_path: Path) -> None:
    ca = pki.new_ca("test-ca")
    serving = pki.issue(ca, "muster-webhook", hosts=["127.0.0.1"], server=True)
    certfile = tmp_path / "tls.crt"
    certfile.write_bytes(serving.cert_pem)
    (sample,) = families(metrics.Metrics(certfile=certfile))[
        "muster_webhook_certificate_expiry_timestamp_seconds"
    ].samples
    expected = x509.load_pem_x509_certificate(serving.cert_pem).not_valid_after_utc.timestamp()
    assert sample.value == expected
    certfile.write_text("garbage")
    assert not families(metrics.Metrics(certfile=certfile))[
        "muster_webhook_certificate_expiry_timestamp_seconds"
    ].samples


def test_the_docs_describe_every_metric() -> None:
    documented = set(re.findall(r"^\| `(muster_[a-z_]+)` \|", DOCS.read_text(), re.MULTILINE))
    exposed = set()
    for family in families(metrics.Metrics()).values():
        if family.name.endswith("_created"):  # prometheus-client's creation timestamps
            continue
        if not family.name.startswith("muster_"):  # the process and Python runtime's
            continue
        exposed.add(family.name + ("_total" if family.type == "counter" else ""))
    assert exposed <= documented


def test_process_metrics_are_exposed_for_the_dashboard() -> None:
    found = families(metrics.Metrics())
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds"):
        assert found[name].samples[0].value > 0, name
    assert "python_info" in found
