"""PolicyReports from what drift and the scans found, decided purely (no I/O).

The Kubernetes Policy Working Group's report API (``wgpolicyk8s.io/v1alpha2``: a namespaced
``PolicyReport``, a ``ClusterPolicyReport``) is where Kyverno writes its results and what Policy
Reporter and dashboards read; Muster writes one ``PolicyReport`` named ``muster`` per judged
namespace and one ``ClusterPolicyReport`` named ``muster`` with the cluster's totals. The newer
``openreports.io`` API is opt-in (alpha) in Kyverno today, so v1alpha2 is what readers expect.

A result per drift finding (``fail`` where enforcement denies, ``warn`` in warn mode or for an
audited namespace that has not opted in), a result per ImagePolicy vulnerability rule judged
against an image's stored scan (with the scan's worst severity), and one ``pass`` per judged
pod with no finding. A report holds at most ``max_results`` results, failures first; the summary
always counts every result and the annotation :data:`OMITTED_ANNOTATION` says how many were left
out. Timestamps of results that did not change are kept, so a pass that finds the same writes
nothing (:func:`same`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from muster.drift.rules import passes
from muster.images.rules import policies as imagepolicies
from muster.kernel import findings, references
from muster.vulnerabilities.rules import scans

__all__ = [
    "API_VERSION",
    "AUDIT_PROPERTY",
    "CLUSTER_KIND",
    "DEFAULT_MAX_RESULTS",
    "GROUP",
    "KIND",
    "MANAGED_BY",
    "NAME",
    "OMITTED_ANNOTATION",
    "SOURCE",
    "VERSION",
    "Result",
    "drift_results",
    "report",
    "same",
    "scan_results",
    "summary",
]

GROUP = "wgpolicyk8s.io"
VERSION = "v1alpha2"
API_VERSION = f"{GROUP}/{VERSION}"
KIND, CLUSTER_KIND = "PolicyReport", "ClusterPolicyReport"
NAME = "muster"  # one report per namespace, and the cluster's
SOURCE = "muster"
MANAGED_BY = {"app.kubernetes.io/managed-by": "muster"}
OMITTED_ANNOTATION = "muster.dev/results-omitted"
AUDIT_PROPERTY = "audit"  # "true" on results of namespaces that have not opted in
DEFAULT_MAX_RESULTS = 1000
MAX_MESSAGE = 1024  # a result's message
# The listed results' JSON, whatever max_results says: etcd refuses objects over 1.5 MiB, and a
# report must be written whole or not at all.
MAX_BYTES = 1_000_000
PASS_POLICY, PASS_RULE = "muster", "drift"

Outcome = Literal["pass", "fail", "warn", "error", "skip"]
_OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "warn", "error", "skip")
_KEPT_FIRST = {"fail": 0, "error": 1, "warn": 2, "skip": 3, "pass": 4}
# trivy's severities as the report API spells them (UNKNOWN is only information).
_SEVERITY = {"CRITICAL": "critical", "HIGH": "high", "MEDIUM": "medium", "LOW": "low"}


@dataclasses.dataclass(frozen=True)
class Result:
    """One result about one pod, without its timestamp (kept from the last write)."""

    policy: str
    rule: str
    result: Outcome
    message: str
    resource: tuple[tuple[str, str], ...]  # the pod's object reference, as sorted pairs
    category: str = ""
    severity: str = ""
    properties: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        """The report API's result, empty fields left out (the apiserver returns it so)."""
        found: dict[str, Any] = {
            "source": SOURCE,
            "policy": self.policy,
            "rule": self.rule,
            "result": self.result,
            "message": self.message[:MAX_MESSAGE],
            "resources": [dict(self.resource)],
        }
        if self.category:
            found["category"] = self.category
        if self.severity:
            found["severity"] = self.severity
        if self.properties:
            found["properties"] = dict(self.properties)
        return found

    def order(self) -> tuple[Any, ...]:
        resource = dict(self.resource)
        return (
            _KEPT_FIRST[self.result],
            resource.get("namespace", ""),
            resource.get("name", ""),
            self.policy,
            self.rule,
            self.message,
        )


def pod_reference(pod: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    metadata = pod.get("metadata") or {}
    found = {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": str(metadata.get("name") or ""),
        "namespace": str(metadata.get("namespace") or ""),
        "uid": str(metadata.get("uid") or ""),
    }
    return tuple(sorted((key, value) for key, value in found.items() if value))


def _policy(finding: findings.Finding) -> str:
    if finding.policy is not None:
        return f"{finding.policy.kind}/{finding.policy.name}"
    return f"muster/{finding.check}"  # a rule no policy object decides (digest pinning, ...)


def _properties(audit: bool, **more: str) -> tuple[tuple[str, str], ...]:
    found = {**({AUDIT_PROPERTY: "true"} if audit else {}), **more}
    return tuple(sorted((key, value) for key, value in found.items() if value))


def drift_results(judged: passes.Judged, checks: Sequence[str]) -> list[Result]:
    """A judged pod's results: one per finding, or one ``pass`` when it has none."""
    resource = pod_reference(judged.pod)
    if not judged.findings:
        verb = "would be admitted" if judged.audit else "would still be admitted"
        return [
            Result(
                policy=PASS_POLICY,
                rule=PASS_RULE,
                result="pass",
                message=f"this running pod {verb} by {', '.join(checks) or 'every check'}",
                resource=resource,
                category=PASS_RULE,
                properties=_properties(judged.audit),
            )
        ]
    results: dict[Result, None] = {}
    for finding in judged.findings:
        outcome: Outcome = "warn" if judged.audit or finding.mode is findings.Mode.WARN else "fail"
        message = str(finding)
        if judged.audit:
            message = f"would be denied if the namespace opted in: {message}"
        result = Result(
            policy=_policy(finding),
            rule=finding.reason,
            result=outcome,
            message=message,
            resource=resource,
            category=finding.check,
            properties=_properties(judged.audit),
        )
        results[result] = None  # the same finding twice (two templates) is one result
    return list(results)


def _worst(scan: scans.ImageScanStatus | None) -> str:
    if scan is None:
        return ""
    for severity in ("CRITICAL", "HIGH", "MEDIUM", "LOW"):
        if scan.counts.get(severity, 0) > 0:
            return _SEVERITY[severity]
    return "info" if scan.counts.get("UNKNOWN", 0) > 0 else ""


def scan_results(
    judged: passes.Judged,
    images: Iterable[str],
    *,
    labels: Mapping[str, str],
    policies: Sequence[imagepolicies.CompiledPolicy],
    scans_by_digest: Mapping[str, scans.ImageScanStatus | None],
    today: datetime.date,
) -> list[Result]:
    """Each ImagePolicy's vulnerability rules over the stored scan of each of a pod's
    digest-pinned ``images`` (as the vulnerability gate judges them at admission); images no
    such rule covers give no result (their ImageScans list every finding)."""
    resource = pod_reference(judged.pod)
    ruled = sorted(
        (p for p in policies if p.vulnerabilities is not None and p.applies_to(labels)),
        key=lambda p: p.name,
    )
    results: dict[Result, None] = {}
    for image in images:
        try:
            reference = references.parse(image)
        except references.InvalidReference:
            continue
        digest = reference.digest
        if digest is None:
            continue
        scan = scans_by_digest.get(digest)
        for policy in ruled:
            if policy.vulnerabilities is None or not policy.covers(reference):
                continue
            violation = scans.judge(
                policy.vulnerabilities, scan, today=today, policy=policy.name, mode=policy.mode
            )
            outcome: Outcome
            if violation is None:
                outcome, rule = "pass", "vulnerabilities"
                message = f"image {reference}: within ImagePolicy {policy.name!r}'s thresholds"
            else:
                outcome = "warn" if judged.audit or violation.action == "warn" else "fail"
                rule, message = violation.reason, f"image {reference}: {violation.message}"
            counts = (
                ", ".join(f"{k}={v}" for k, v in sorted(scan.counts.items()) if v)
                if scan is not None
                else ""
            )
            result = Result(
                policy=f"ImagePolicy/{policy.name}",
                rule=rule,
                result=outcome,
                message=message,
                resource=resource,
                category="vulnerabilities",
                severity=_worst(scan),
                properties=_properties(
                    judged.audit,
                    digest=digest,
                    counts=counts,
                    scannedAt=scan.scanned_at if scan is not None else "",
                ),
            )
            results[result] = None
    return list(results)


def summary(results: Iterable[Result]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(_OUTCOMES, 0)
    for result in results:
        counts[result.result] += 1
    return counts


def _timestamp(when: datetime.datetime) -> dict[str, int]:
    return {"seconds": int(when.timestamp()), "nanos": 0}


def _key(body: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in body.items() if k != "timestamp"}, sort_keys=True)


def report(
    namespace: str | None,
    results: Sequence[Result],
    *,
    previous: Mapping[str, Any] | None,
    now: datetime.datetime,
    max_results: int = DEFAULT_MAX_RESULTS,
    totals: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The report of ``namespace`` (None: the ClusterPolicyReport) holding ``results``.

    At most ``max_results`` results are listed (and at most :data:`MAX_BYTES` of them), failures
    first; the summary counts all of them
    (or is ``totals``, for the cluster's report); results ``previous`` listed keep their time.
    """
    ordered = sorted(dict.fromkeys(results), key=Result.order)
    known = {
        _key(item): item.get("timestamp")
        for item in (previous or {}).get("results") or ()
        if isinstance(item, Mapping)
    }
    listed = []
    size = 0
    for result in ordered[: max(0, max_results)]:
        body = result.body()
        body["timestamp"] = known.get(_key(body)) or _timestamp(now)
        size += len(json.dumps(body)) + 1
        if size > MAX_BYTES:
            break
        listed.append(body)
    metadata: dict[str, Any] = {"name": NAME, "labels": dict(MANAGED_BY)}
    if namespace is not None:
        metadata["namespace"] = namespace
    omitted = len(ordered) - len(listed)
    if omitted:
        metadata["annotations"] = {OMITTED_ANNOTATION: str(omitted)}
    found: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND if namespace is not None else CLUSTER_KIND,
        "metadata": metadata,
        "summary": dict(totals) if totals is not None else summary(ordered),
        "results": listed,
    }
    return found


def same(previous: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether writing ``desired`` over ``previous`` would change what readers see."""
    if previous is None:
        return False

    def seen(body: Mapping[str, Any]) -> tuple[str, ...]:
        metadata = body.get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        return (
            json.dumps(body.get("results") or [], sort_keys=True),
            json.dumps(body.get("summary") or {}, sort_keys=True),
            json.dumps({k: labels.get(k) for k in MANAGED_BY}, sort_keys=True),
            str(annotations.get(OMITTED_ANNOTATION, "")),
        )

    return seen(previous) == seen(desired)
