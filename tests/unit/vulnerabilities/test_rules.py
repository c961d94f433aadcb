"""Vulnerability rules and trivy reports, without trivy: the decisions the gate makes."""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.images.rules import policies as imagepolicies
from muster.vulnerabilities import gate as handler
from muster.vulnerabilities.rules import scans as vulnerabilities

pytestmark = pytest.mark.unit

TODAY = datetime.date(2026, 6, 1)
DIGEST = "sha256:" + "ab" * 32


def report(*vulns: dict[str, Any]) -> dict[str, Any]:
    return {
        "SchemaVersion": 2,
        "Trivy": {"Version": "0.76.0"},
        "Metadata": {"OS": {"Family": "debian", "Name": "12.7"}},
        "Results": [{"Target": "x", "Class": "os-pkgs", "Vulnerabilities": list(vulns)}],
    }


def vuln(cve: str, severity: str, fixed: str = "", pkg: str = "libplanted") -> dict[str, Any]:
    return {
        "VulnerabilityID": cve,
        "PkgName": pkg,
        "InstalledVersion": "1.0-1",
        "FixedVersion": fixed,
        "Severity": severity,
        "Title": f"{cve} title",
    }


def scan(*vulns: dict[str, Any]) -> vulnerabilities.ImageScanStatus:
    return vulnerabilities.parse_report(
        report(*vulns),
        scanned_at="2026-06-01T00:00:00Z",
        db_metadata={"Version": 2, "UpdatedAt": "2026-05-31T00:00:00Z"},
    )


def rules(**fields: Any) -> vulnerabilities.VulnerabilityRules:
    return vulnerabilities.VulnerabilityRules.model_validate(fields)


def test_report_reduced_to_counts_and_worst_findings_first() -> None:
    status = scan(vuln("CVE-1", "LOW"), vuln("CVE-2", "CRITICAL", "2.0"), vuln("CVE-3", "HIGH"))
    assert status.counts == {"UNKNOWN": 0, "LOW": 1, "MEDIUM": 0, "HIGH": 1, "CRITICAL": 1}
    assert [f.id for f in status.findings] == ["CVE-2", "CVE-3", "CVE-1"]
    assert status.findings[0].fixed_version == "2.0"
    assert status.db_key() == (2, "2026-05-31T00:00:00Z")
    assert status.os == "debian 12.7"
    assert status.scanner_version == "0.76.0"


def test_findings_are_bounded_and_marked_truncated() -> None:
    many = [vuln(f"CVE-{n}", "LOW") for n in range(10)]
    status = vulnerabilities.parse_report(
        report(*many), scanned_at="t", db_metadata=None, max_findings=3
    )
    assert len(status.findings) == 3
    assert status.truncated
    assert status.counts["LOW"] == 10


def test_duplicate_findings_across_results_count_once() -> None:
    data = report(vuln("CVE-1", "HIGH"))
    data["Results"].append(dict(data["Results"][0]))
    status = vulnerabilities.parse_report(data, scanned_at="t")
    assert status.counts["HIGH"] == 1


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"SchemaVersion": 1, "Results": []},
        {"SchemaVersion": 2, "Results": {"no": "list"}},
        {"SchemaVersion": 2, "Results": ["text"]},
        {"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"PkgName": "x"}]}]},
    ],
)
def test_malformed_reports_are_errors_not_clean_images(bad: object) -> None:
    with pytest.raises(vulnerabilities.InvalidReport):
        vulnerabilities.parse_report(bad, scanned_at="t")


def test_no_results_is_a_clean_image() -> None:
    status = vulnerabilities.parse_report({"SchemaVersion": 2}, scanned_at="t")
    assert sum(status.counts.values()) == 0


def test_above_max_severity_denies_in_enforce_and_warns_in_warn() -> None:
    found = scan(vuln("CVE-9", "CRITICAL", "2.0"), vuln("CVE-8", "MEDIUM"))
    denied = vulnerabilities.judge(rules(), found, today=TODAY, policy="p", mode="enforce")
    assert denied is not None
    assert denied.action == "deny"
    assert denied.reason == "VulnerabilitiesAboveThreshold"
    assert "CVE-9 (CRITICAL, libplanted 1.0-1)" in denied.message
    assert "CVE-8" not in denied.message
    warned = vulnerabilities.judge(rules(), found, today=TODAY, policy="p", mode="warn")
    assert warned is not None
    assert warned.action == "warn"


def test_at_max_severity_passes() -> None:
    found = scan(vuln("CVE-7", "HIGH"))
    assert vulnerabilities.judge(rules(), found, today=TODAY, policy="p", mode="enforce") is None
    stricter = rules(maxSeverity="MEDIUM")
    assert vulnerabilities.judge(stricter, found, today=TODAY, policy="p", mode="enforce")


def test_ignore_unfixed_skips_findings_without_a_fix() -> None:
    found = scan(vuln("CVE-5", "CRITICAL"))
    relaxed = rules(ignoreUnfixed=True)
    assert vulnerabilities.judge(relaxed, found, today=TODAY, policy="p", mode="enforce") is None
    fixed = scan(vuln("CVE-5", "CRITICAL", "1.0-2"))
    assert vulnerabilities.judge(relaxed, fixed, today=TODAY, policy="p", mode="enforce")


def test_allow_list_holds_until_its_expiry_date() -> None:
    found = scan(vuln("CVE-2024-3094", "CRITICAL", "5.6.1"))
    allowed = rules(allow=[{"id": "CVE-2024-3094", "expires": "2026-06-01", "reason": "vendor"}])
    assert vulnerabilities.judge(allowed, found, today=TODAY, policy="p", mode="enforce") is None
    later = TODAY + datetime.timedelta(days=1)
    assert vulnerabilities.judge(allowed, found, today=later, policy="p", mode="enforce")


@pytest.mark.parametrize(
    ("when", "mode", "action"),
    [("deny", "enforce", "deny"), ("deny", "warn", "warn"), ("warn", "enforce", "warn")],
)
def test_unscanned_images_follow_when_unscanned(when: str, mode: Any, action: str) -> None:
    violation = vulnerabilities.judge(
        rules(whenUnscanned=when), None, today=TODAY, policy="p", mode=mode
    )
    assert violation is not None
    assert violation.reason == "ImageNotScanned"
    assert violation.action == action
    assert (
        vulnerabilities.judge(
            rules(whenUnscanned="allow"), None, today=TODAY, policy="p", mode=mode
        )
        is None
    )


def test_a_failed_scan_is_not_a_clean_scan() -> None:
    failed = vulnerabilities.ImageScanStatus(scanned_at="t", error="trivy exited 1: boom")
    violation = vulnerabilities.judge(
        rules(whenUnscanned="deny"), failed, today=TODAY, policy="p", mode="enforce"
    )
    assert violation is not None
    assert violation.reason == "ImageScanFailed"
    assert "boom" in violation.message


def test_policy_rules_are_validated_at_the_edge() -> None:
    base: dict[str, Any] = {"images": ["r/**"], "authorities": [{"key": {"data": "k"}}]}
    parsed = imagepolicies.parse_spec({**base, "vulnerabilities": {"maxSeverity": "MEDIUM"}})
    assert parsed.vulnerabilities is not None
    assert parsed.vulnerabilities.when_unscanned == "warn"
    for bad in (
        {"maxSeverity": "SEVERE"},
        {"whenUnscanned": "maybe"},
        {"allow": [{"id": "CVE-1"}]},  # an exception without an expiry
        {"allow": [{"id": "CVE 1", "expires": "2027-01-01"}]},
        {"unknownField": True},
    ):
        with pytest.raises(imagepolicies.InvalidImagePolicy):
            imagepolicies.parse_spec({**base, "vulnerabilities": bad})


def test_scan_names_are_object_names_of_sha256_digests() -> None:
    assert vulnerabilities.scan_name(DIGEST) == "sha256-" + "ab" * 32
    for bad in ("sha512:" + "ab" * 64, "sha256:XY", "latest"):
        with pytest.raises(ValueError, match="digest"):
            vulnerabilities.scan_name(bad)


def test_pod_image_ids_from_spec_and_status() -> None:
    pinned = f"r.example/app@{DIGEST}"
    other = "sha256:" + "cd" * 32
    pod = {
        "spec": {"containers": [{"name": "a", "image": pinned}, {"name": "b", "image": "r/b:1"}]},
        "status": {
            "containerStatuses": [
                {"imageID": f"docker-pullable://r.example/b@{other}"},
                {"imageID": ""},
            ]
        },
    }
    assert handler.image_ids(pod) == [pinned, f"r.example/b@{other}"]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(vulnerabilities.SEVERITIES),
            st.booleans(),
            st.integers(min_value=0, max_value=30),
        ),
        max_size=12,
    ),
    st.sampled_from(vulnerabilities.SEVERITIES),
)
def test_violation_iff_a_counted_finding_is_above_the_limit(
    items: list[tuple[str, bool, int]], limit: str
) -> None:
    found = scan(*(vuln(f"CVE-{n}", sev, "9" if fixed else "") for sev, fixed, n in items))
    verdict = vulnerabilities.judge(
        rules(maxSeverity=limit, ignoreUnfixed=True), found, today=TODAY, policy="p", mode="warn"
    )
    expected = any(
        vulnerabilities.severity_rank(f.severity) > vulnerabilities.severity_rank(limit)
        and f.fixed_version
        for f in found.findings
    )
    assert (verdict is not None) == expected


def test_scan_status_round_trips_through_its_crd_shape() -> None:
    status = scan(vuln("CVE-1", "HIGH"))
    dumped = status.model_dump(by_alias=True, mode="json")
    assert dumped["findings"][0]["installedVersion"] == "1.0-1"
    assert vulnerabilities.ImageScanStatus.model_validate(dumped) == status
    with pytest.raises(pydantic.ValidationError):
        vulnerabilities.ImageScanStatus.model_validate({**dumped, "extra": 1})
