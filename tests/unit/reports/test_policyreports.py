"""PolicyReport results decided purely: outcomes by mode and audit, the bound (failures kept
first, the summary counting all), kept timestamps, and when a write changes nothing."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from muster.drift.rules import passes
from muster.images.rules import policies as imagepolicies
from muster.kernel import findings
from muster.reports.rules import policyreports as reports
from muster.vulnerabilities.rules import scans

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(hours=1)
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example/team/app@{DIGEST}"


def pod(name: str, namespace: str = "team") -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"}}


def finding(mode: findings.Mode = findings.Mode.ENFORCE) -> findings.Finding:
    return findings.Finding(
        check="models",
        reason="ModelRevoked",
        subject='volume "data"',
        message="Model 'm' is revoked: leaked",
        mode=mode,
        policy=findings.PolicyRef(kind="ModelPolicy", name="team-models"),
    )


def test_findings_become_fail_warn_or_audited_warn_and_clean_pods_pass() -> None:
    checks = ("models",)
    (failed,) = reports.drift_results(passes.Judged(pod("a"), (finding(),)), checks)
    assert (failed.result, failed.policy, failed.rule, failed.category) == (
        "fail",
        "ModelPolicy/team-models",
        "ModelRevoked",
        "models",
    )
    assert dict(failed.resource) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "a",
        "namespace": "team",
        "uid": "uid-a",
    }
    (warned,) = reports.drift_results(
        passes.Judged(pod("a"), (finding(findings.Mode.WARN),)), checks
    )
    assert warned.result == "warn" and warned.properties == ()
    (audited,) = reports.drift_results(passes.Judged(pod("a"), (finding(),), audit=True), checks)
    assert audited.result == "warn"
    assert dict(audited.properties) == {reports.AUDIT_PROPERTY: "true"}
    assert audited.message.startswith("would be denied if the namespace opted in: ")
    (clean,) = reports.drift_results(passes.Judged(pod("b"), ()), checks)
    assert (clean.result, clean.policy, clean.rule) == ("pass", "muster", "drift")
    # The same finding from two templates is one result.
    assert len(reports.drift_results(passes.Judged(pod("a"), (finding(), finding())), checks)) == 1


def test_the_bound_keeps_failures_first_and_the_summary_counts_all() -> None:
    results = [
        *(r for n in range(4) for r in reports.drift_results(passes.Judged(pod(f"p{n}"), ()), ())),
        *reports.drift_results(passes.Judged(pod("z-bad"), (finding(),)), ()),
    ]
    body = reports.report("team", results, previous=None, now=NOW, max_results=2)
    assert [r["result"] for r in body["results"]] == ["fail", "pass"]
    assert body["summary"] == {"pass": 4, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    assert body["metadata"]["annotations"] == {reports.OMITTED_ANNOTATION: "3"}
    assert body["metadata"]["labels"] == reports.MANAGED_BY
    assert (body["apiVersion"], body["kind"]) == ("wgpolicyk8s.io/v1alpha2", "PolicyReport")
    whole = reports.report("team", results, previous=None, now=NOW)
    assert "annotations" not in whole["metadata"] and len(whole["results"]) == 5


def test_unchanged_results_keep_their_time_and_need_no_write() -> None:
    first = reports.drift_results(passes.Judged(pod("a"), ()), ())
    stored = reports.report("team", first, previous=None, now=NOW)
    assert stored["results"][0]["timestamp"] == {"seconds": int(NOW.timestamp()), "nanos": 0}
    again = reports.report("team", first, previous=stored, now=LATER)
    assert again["results"] == stored["results"]
    assert reports.same(stored, again)
    changed = reports.drift_results(passes.Judged(pod("a"), (finding(),)), ())
    moved = reports.report("team", [*first, *changed], previous=stored, now=LATER)
    assert not reports.same(stored, moved)
    times = {r["result"]: r["timestamp"]["seconds"] for r in moved["results"]}
    assert times == {"pass": int(NOW.timestamp()), "fail": int(LATER.timestamp())}
    assert not reports.same(None, again)


def _policy(max_severity: str, mode: str = "enforce") -> imagepolicies.CompiledPolicy:
    spec = imagepolicies.parse_spec(
        {
            "images": ["registry.example/team/**"],
            "mode": mode,
            "authorities": [{"static": {"action": "pass"}}],
            "vulnerabilities": {"maxSeverity": max_severity},
        }
    )
    return imagepolicies.compile_policy("vulns", 1, spec, {})


def _scan() -> scans.ImageScanStatus:
    return scans.ImageScanStatus(
        scanned_at="2026-01-01T00:00:00Z",
        counts={"CRITICAL": 0, "HIGH": 1, "MEDIUM": 0, "LOW": 3, "UNKNOWN": 0},
        findings=(
            scans.ScanFinding(id="CVE-1", package="zlib", fixed_version="2", severity="HIGH"),
        ),
    )


@pytest.mark.parametrize(
    ("max_severity", "audit", "outcome", "rule"),
    [
        ("MEDIUM", False, "fail", "VulnerabilitiesAboveThreshold"),
        ("MEDIUM", True, "warn", "VulnerabilitiesAboveThreshold"),
        ("HIGH", False, "pass", "vulnerabilities"),
    ],
)
def test_scans_are_judged_by_the_image_policies_vulnerability_rules(
    max_severity: str, audit: bool, outcome: str, rule: str
) -> None:
    (result,) = reports.scan_results(
        passes.Judged(pod("a"), (), audit=audit),
        [IMAGE, "not a reference", "registry.example/team/app:tag"],
        labels={},
        policies=[_policy(max_severity)],
        scans_by_digest={DIGEST: _scan()},
        today=NOW.date(),
    )
    assert (result.result, result.rule, result.policy) == (outcome, rule, "ImagePolicy/vulns")
    assert result.severity == "high"  # the scan's worst
    assert dict(result.properties)["digest"] == DIGEST
    assert dict(result.properties)["counts"] == "HIGH=1, LOW=3"


def test_images_no_vulnerability_rule_covers_give_no_result() -> None:
    other = imagepolicies.compile_policy(
        "signed-only",
        1,
        imagepolicies.parse_spec(
            {"images": ["registry.example/**"], "authorities": [{"static": {"action": "pass"}}]}
        ),
        {},
    )
    found = reports.scan_results(
        passes.Judged(pod("a"), ()),
        [IMAGE],
        labels={},
        policies=[other],
        scans_by_digest={DIGEST: _scan()},
        today=NOW.date(),
    )
    assert found == []


def test_a_report_stays_within_what_the_apiserver_stores_whatever_the_bound() -> None:
    long = dataclasses.replace(finding(), message="x" * 5000)
    results = [
        r
        for n in range(2000)
        for r in reports.drift_results(passes.Judged(pod(f"p{n:04}"), (long,)), ())
    ]
    body = reports.report("team", results, previous=None, now=NOW, max_results=10_000)
    assert len(json.dumps(body)) < 1_500_000 - 10_000  # etcd's limit, with room for metadata
    assert all(len(r["message"]) == reports.MAX_MESSAGE for r in body["results"])
    omitted = int(body["metadata"]["annotations"][reports.OMITTED_ANNOTATION])
    assert omitted == 2000 - len(body["results"]) and omitted > 0
    assert body["summary"]["fail"] == 2000
