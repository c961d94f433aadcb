"""Drift of running pods, the pure parts: which pods, the review they are judged by, counting,
the Event, and which replica runs the passes."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from muster.app import areas
from muster.cli import main
from muster.drift import area as drift_area
from muster.drift.rules import passes as drift
from muster.kernel import exemptions, findings, reviews, scopes, selectors, subjects
from tests import commandline

pytestmark = pytest.mark.unit

OWN = "muster-system"
IMAGE = "registry.example/team/trainer@sha256:" + "ab" * 32


def pod(name: str, namespace: str = "team", **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    metadata.update(extra.pop("metadata", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "main", "image": IMAGE}]},
        **extra,
    }


NAMESPACES = {
    "team": {scopes.ENFORCE_LABEL: "true"},
    "trial": {scopes.ENFORCE_LABEL: "warn"},
    "plain": {},
    "ignored": {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true"},
    "kube-system": {scopes.ENFORCE_LABEL: "true"},
    OWN: {scopes.ENFORCE_LABEL: "true"},
}


def names(chosen: list[drift.Candidate]) -> list[tuple[str, findings.Mode]]:
    return [(p["metadata"]["namespace"], mode) for p, mode in chosen]


def test_pods_are_chosen_in_the_namespaces_admission_judges_with_their_mode() -> None:
    pods = [pod("a", ns) for ns in [*NAMESPACES, "unlisted"]]
    chosen = drift.candidates(pods, NAMESPACES, own_namespace=OWN)
    assert names(chosen) == [("team", findings.Mode.ENFORCE), ("trial", findings.Mode.WARN)]


def test_a_namespace_selector_replaces_the_opt_out_but_never_the_opt_in_or_the_system() -> None:
    selector = selectors.LabelSelector.model_validate({"matchLabels": {"suite": "x"}})
    labels = {
        ns: {**found, "suite": "x"} if ns != "team" else dict(found)
        for ns, found in NAMESPACES.items()
    }
    pods = [pod("a", ns) for ns in labels]
    chosen = drift.candidates(pods, labels, own_namespace=OWN, selector=selector)
    assert names(chosen) == [("trial", findings.Mode.WARN), ("ignored", findings.Mode.ENFORCE)]


def test_finished_deleted_and_exempted_pods_are_not_rejudged() -> None:
    pods = [
        pod("running", status={"phase": "Running"}),
        pod("pending"),
        pod("done", status={"phase": "Succeeded"}),
        pod("failed", status={"phase": "Failed"}),
        pod("going", metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"}),
        pod("exempt", metadata={"annotations": {exemptions.ANNOTATION: "INC-1"}}),
        {"metadata": "not a mapping"},
    ]
    chosen = drift.candidates(pods, NAMESPACES, own_namespace=OWN)
    assert [p["metadata"]["name"] for p, _ in chosen] == ["running", "pending"]


def test_in_reach_without_opt_in_for_revocation_reports() -> None:
    assert scopes.in_reach("plain", {}, own_namespace=OWN)
    assert not scopes.in_reach("ignored", NAMESPACES["ignored"], own_namespace=OWN)
    assert not scopes.in_reach(OWN, {}, own_namespace=OWN)
    assert not scopes.in_reach("kube-public", {}, own_namespace=OWN)
    selector = selectors.LabelSelector.model_validate({"matchLabels": {"suite": "x"}})
    assert not scopes.in_reach("plain", {}, own_namespace=OWN, selector=selector)
    assert scopes.in_reach(
        "ignored", {**NAMESPACES["ignored"], "suite": "x"}, own_namespace=OWN, selector=selector
    )


def test_a_pod_is_judged_as_admission_judges_its_creation() -> None:
    stored = pod("a", metadata={"labels": {"app": "x"}})
    review = reviews.validate(drift.pod_review(stored))  # a well-formed AdmissionReview
    subject = subjects.from_review(review, mode=findings.Mode.WARN, own_namespace=OWN)
    assert subject is not None
    assert (subject.operation, subject.kind, subject.resource) == ("CREATE", "Pod", "pods")
    assert (subject.namespace, subject.name, subject.mode) == ("team", "a", findings.Mode.WARN)
    assert subject.is_pod and subject.dry_run
    [template] = subject.templates
    assert template.pointer == "/spec"
    assert template.spec["containers"][0]["image"] == IMAGE
    # The stored pod itself is not changed.
    assert "metadata" in stored and review["request"]["object"] is not stored


# What the drift pass re-runs and ignores, as the areas declare it.
RULES = drift_area.rules(areas.GATES)


def finding(check: str, reason: str, subject: str = 'container "main"') -> findings.Finding:
    return findings.Finding(check=check, reason=reason, subject=subject, message=f"{reason}!")


def test_only_findings_about_the_pod_from_drift_checks_are_drift() -> None:
    assert RULES.not_drift.issubset(areas.reasons())  # real reasons, spelled right
    assert set(RULES.checks) == {"image-signature", "gpu-stack", "datasets", "models"}
    found = [
        finding("image-signature", "SignatureNotTrusted"),
        finding("models", "ModelRevoked"),
        finding("gpu-stack", "NodeNotCompliant"),
        finding("image-signature", "DeadlineExceeded"),
        finding("models", "InternalError"),
        finding("models", "ModelRegistryUnavailable"),
        finding("image-signature", "SignatureLookupFailed"),
        finding("gpu-stack", "ImageConfigUnreadable"),
        finding("digest-pinning", "ImageNotPinned"),
        finding("vulnerabilities", "VulnerabilitiesAboveThreshold"),
        # A running image no policy covers is drift; one a static pass let in is not.
        finding("image-signature", "ImageNotCovered"),
        finding("image-signature", "ImagePassedUnsigned"),
    ]
    assert [f.reason for f in drift.drifted(found, RULES)] == [
        "SignatureNotTrusted",
        "ModelRevoked",
        "NodeNotCompliant",
        "ImageNotCovered",
    ]


def test_pods_are_counted_once_per_check_and_every_check_has_a_value() -> None:
    results = [
        (finding("models", "ModelRevoked", "a"), finding("models", "ModelRevoked", "b")),
        (finding("models", "ModelRevoked"), finding("image-signature", "ImageNotSigned")),
        (),
    ]
    assert drift.counts(results, RULES.checks) == {
        "image-signature": 1,
        "gpu-stack": 0,
        "datasets": 0,
        "models": 2,
    }
    assert drift.counts([], RULES.checks) == dict.fromkeys(RULES.checks, 0)


def test_the_event_names_every_finding_in_a_stable_order() -> None:
    stored = pod("a")
    first = drift.notice(
        stored, [finding("models", "ModelRevoked"), finding("image-signature", "ImageNotSigned")]
    )
    again = drift.notice(
        stored, [finding("image-signature", "ImageNotSigned"), finding("models", "ModelRevoked")]
    )
    assert first == again  # same note: repeats fold into one Event series
    assert (first.reason, first.type.value, first.action) == ("PodDrifted", "Warning", "Rejudge")
    assert first.target.body() == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "a",
        "namespace": "team",
        "uid": "uid-a",
    }
    assert first.note == (
        "this running pod would no longer be admitted: "
        '[image-signature] container "main": ImageNotSigned!; '
        '[models] container "main": ModelRevoked!'
    )
    many = drift.notice(
        stored, [finding("models", "ModelRevoked", "x" * 300 + str(i)) for i in range(9)]
    )
    assert len(many.note.encode()) <= 1024


NOW = datetime.datetime(2026, 11, 26, 8, 0, tzinfo=datetime.UTC)


def peer(priority: int, seconds_ago: float, lifetime: int = 60) -> dict[str, Any]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_only_the_highest_live_peer_runs_the_passes() -> None:
    assert drift.active_peer(None, 5, NOW)
    assert drift.active_peer({"me": peer(5, 1)}, 5, NOW)
    assert drift.active_peer({"me": peer(5, 1), "low": peer(3, 1)}, 5, NOW)
    assert not drift.active_peer({"me": peer(5, 1), "high": peer(9, 1)}, 5, NOW)
    # A higher peer that stopped renewing is dead: this one takes over, as kopf resumes it.
    assert drift.active_peer({"me": peer(5, 1), "high": peer(9, 61)}, 5, NOW)
    # Same priority: kopf pauses both (and warns), and so does drift; a dead twin is no tie.
    assert not drift.active_peer({"me": peer(5, 1), "twin": peer(5, 1)}, 5, NOW)
    assert drift.active_peer({"me": peer(5, 1), "twin": peer(5, 61)}, 5, NOW)
    # kopf's own format without a zone, and junk entries, are read safely.
    naive = {"priority": 9, "lifetime": 60, "lastseen": "2026-11-26T07:59:59"}
    assert not drift.active_peer({"high": naive}, 5, NOW)
    assert drift.active_peer({"bad": {"priority": "x"}, "worse": "y", "none": {}}, 5, NOW)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--drift-interval=-1", "--drift-interval must not be negative"),
        ("--namespace-selector={", "--namespace-selector is not a label selector"),
        (
            '--namespace-selector={"matchLabels": {"a": "b"}, "bogus": 1}',
            "--namespace-selector is not a label selector: bogus",
        ),
    ],
)
def test_bad_drift_flags_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    cert = tmp_path / "tls.crt"
    cert.write_text("x")
    assert main(["run", f"--tls-cert-file={cert}", f"--tls-key-file={cert}", flag]) == 2
    assert message in capsys.readouterr().err


def test_drift_flags_reach_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, seen = commandline.run_settings(tmp_path, monkeypatch, "--drift-interval=0")
    assert code == 0
    (off,) = seen
    selector = '--namespace-selector={"matchLabels": {"suite": "x"}}'
    code, seen = commandline.run_settings(tmp_path, monkeypatch, selector)
    assert code == 0
    (scoped,) = seen
    assert off.drift_interval == 0 and off.namespace_selector is None
    assert scoped.drift_interval == drift.DEFAULT_INTERVAL_SECONDS
    assert scoped.namespace_selector is not None
    assert selectors.matches(scoped.namespace_selector, {"suite": "x"})
    assert not selectors.matches(scoped.namespace_selector, {"suite": "y"})
