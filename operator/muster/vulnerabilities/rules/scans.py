"""Vulnerability rules, trivy reports and the decisions made from them (no I/O).

Trivy's JSON report (``--format json``, schema 2) is reduced to an :class:`ImageScanStatus`
stored in a cluster-scoped ``ImageScan`` per image digest; an ``ImagePolicy``'s
``vulnerabilities`` rules are judged against it. Nothing here reads trivy's text output.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pydantic
from pydantic import alias_generators

from muster.images.rules.scanrules import (
    SEVERITIES,
    AllowedVulnerability,
    Severity,
    VulnerabilityRules,
    severity_rank,
)

__all__ = [
    "MAX_FINDINGS",
    "SEVERITIES",
    "AllowedVulnerability",
    "ImageScanSpec",
    "ImageScanStatus",
    "InvalidReport",
    "ScanFinding",
    "Violation",
    "VulnerabilityRules",
    "judge",
    "parse_report",
    "scan_name",
    "severity_rank",
]

MAX_FINDINGS = 200  # findings kept per ImageScan, worst first: objects stay well under 1.5 MB
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
)


def scan_name(digest: str) -> str:
    """The ImageScan name of an image digest: ``sha256-<hex>`` (a valid object name)."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 image digest: {digest!r}")
    return digest.replace(":", "-")


class InvalidReport(ValueError):
    """Trivy's output is not a report this code understands: the scan failed."""


# ---------------------------------------------------------------------------------------------
# The ImageScan resource


class ImageScanSpec(pydantic.BaseModel):
    """Which image digest was scanned (the results are in ``status``)."""

    model_config = _CONFIG

    digest: str = pydantic.Field(pattern=_DIGEST.pattern, description="the scanned image digest")
    image: str = pydantic.Field(
        min_length=1, max_length=1024, description="the reference it was pulled by"
    )


class ScanFinding(pydantic.BaseModel):
    model_config = _CONFIG

    id: str
    package: str
    installed_version: str = ""
    fixed_version: str = ""
    severity: Severity = "UNKNOWN"
    title: str = ""


class ImageScanStatus(pydantic.BaseModel):
    """The result of one scan: counts by severity, the worst findings, the DB it used."""

    model_config = _CONFIG

    scanned_at: str
    db_updated_at: str = ""
    db_version: int = 0
    scanner: str = "trivy"
    scanner_version: str = ""
    os: str = ""
    counts: dict[str, int] = pydantic.Field(default_factory=dict)
    findings: tuple[ScanFinding, ...] = ()
    truncated: bool = False
    error: str = ""  # the scan failed: nothing is known about the image

    def db_key(self) -> tuple[int, str]:
        return (self.db_version, self.db_updated_at)


def _text(value: object, limit: int = 256) -> str:
    return value[:limit] if isinstance(value, str) else ""


def parse_report(
    report: object,
    *,
    scanned_at: str,
    db_metadata: Mapping[str, Any] | None = None,
    max_findings: int = MAX_FINDINGS,
) -> ImageScanStatus:
    """Reduce trivy's JSON report to what an ImageScan stores; malformed input raises."""
    if not isinstance(report, Mapping) or report.get("SchemaVersion") != 2:
        raise InvalidReport("trivy's output is not a schema 2 JSON report")
    results = report.get("Results") or []
    if not isinstance(results, list):
        raise InvalidReport("trivy's report has a Results field that is not a list")
    found: dict[tuple[str, str, str], ScanFinding] = {}
    for result in results:
        if not isinstance(result, Mapping):
            raise InvalidReport("trivy's report has a result that is not an object")
        for item in result.get("Vulnerabilities") or []:
            if not isinstance(item, Mapping) or not isinstance(item.get("VulnerabilityID"), str):
                raise InvalidReport("trivy's report has a vulnerability without an id")
            severity = item.get("Severity")
            finding = ScanFinding(
                id=_text(item["VulnerabilityID"], 128),
                package=_text(item.get("PkgName")),
                installed_version=_text(item.get("InstalledVersion")),
                fixed_version=_text(item.get("FixedVersion")),
                severity=severity if severity in SEVERITIES else "UNKNOWN",
                title=_text(item.get("Title")),
            )
            found[(finding.id, finding.package, finding.installed_version)] = finding
    ordered = sorted(found.values(), key=lambda f: (-severity_rank(f.severity), f.id, f.package))
    counts = dict.fromkeys(SEVERITIES, 0)
    for finding in ordered:
        counts[finding.severity] += 1
    metadata = report.get("Metadata") or {}
    os_ = metadata.get("OS") if isinstance(metadata, Mapping) else None
    os_name = (
        f"{_text(os_.get('Family'))} {_text(os_.get('Name'))}".strip()
        if isinstance(os_, Mapping)
        else ""
    )
    trivy = report.get("Trivy")
    db = db_metadata or {}
    return ImageScanStatus(
        scanned_at=scanned_at,
        db_updated_at=_text(db.get("UpdatedAt")),
        db_version=db.get("Version") if isinstance(db.get("Version"), int) else 0,
        scanner_version=_text(trivy.get("Version")) if isinstance(trivy, Mapping) else "",
        os=os_name,
        counts=counts,
        findings=tuple(ordered[:max_findings]),
        truncated=len(ordered) > max_findings,
    )


# ---------------------------------------------------------------------------------------------
# Decisions


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    """Why an image fails a policy's vulnerability rules; ``action`` is warn or deny."""

    reason: str  # VulnerabilitiesAboveThreshold | ImageNotScanned | ImageScanFailed
    message: str
    action: Literal["warn", "deny"]


def _counted(
    rules: VulnerabilityRules, findings: Iterable[ScanFinding], today: datetime.date
) -> list[ScanFinding]:
    allowed = {entry.id for entry in rules.allow if entry.expires >= today}
    limit = severity_rank(rules.max_severity)
    return [
        finding
        for finding in findings
        if severity_rank(finding.severity) > limit
        and finding.id not in allowed
        and not (rules.ignore_unfixed and not finding.fixed_version)
    ]


def judge(
    rules: VulnerabilityRules,
    scan: ImageScanStatus | None,
    *,
    today: datetime.date,
    policy: str,
    mode: Literal["enforce", "warn"],
) -> Violation | None:
    """None when the image passes; otherwise what is wrong and whether to deny or warn."""
    action: Literal["warn", "deny"] = "deny" if mode == "enforce" else "warn"
    if scan is None or scan.error:
        if rules.when_unscanned == "allow":
            return None
        what = (
            f"its last scan failed ({scan.error})" if scan is not None else "it is not scanned yet"
        )
        return Violation(
            reason="ImageScanFailed" if scan is not None else "ImageNotScanned",
            message=f"ImagePolicy {policy!r} requires a vulnerability scan and {what}",
            action="deny" if rules.when_unscanned == "deny" and action == "deny" else "warn",
        )
    over = _counted(rules, scan.findings, today)
    if not over:
        return None
    shown = ", ".join(f"{f.id} ({f.severity}, {f.package} {f.installed_version})" for f in over[:3])
    more = f" and {len(over) - 3} more" if len(over) > 3 else ""
    return Violation(
        reason="VulnerabilitiesAboveThreshold",
        message=(
            f"{len(over)} known vulnerabilities worse than {rules.max_severity}, the most "
            f"ImagePolicy {policy!r} allows: {shown}{more}; rebuild it with the fixed packages "
            "(kubectl get imagescans lists every finding)"
        ),
        action=action,
    )
