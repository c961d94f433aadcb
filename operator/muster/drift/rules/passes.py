"""Drift of running pods, decided purely: which pods to re-judge, how to judge them, what to count.

A pod *drifts* when it was admitted but would no longer be: re-judged now, as admission would
judge its CREATE (the same gates, the same VALIDATE phase, the namespace's current mode), at
least one finding of a drift check comes back. Policies change (a key is replaced, a Model
revoked, a GPU policy tightened) and facts change (a node's GPU stack), but the pod keeps
running: drift is what tells the SRE so. The I/O (listing pods, running the gates, posting
Events and setting gauges) lives in ``muster.drift.controller``.

What is not drift:

* findings that say the gate could not find out (:attr:`DriftRules.not_drift`: a deadline, a
  failure, an apiserver or registry that did not answer): they say nothing about the pod;
* pods admitted under a break-glass exemption (annotation ``muster.dev/exemption``): they were
  let through knowingly and audited then (``ExemptionUsed``);
* pods that finished (``Succeeded``/``Failed``) or are being deleted.

*Audit* (``muster run --audit-namespaces``): a pass may also judge the running pods of
namespaces in reach that have not opted in (:func:`audited`), as enforcement would judge them.
What it finds there is only reported (PolicyReports, ``muster.reports``): no Event, no drift
gauge, nothing evicted. Opted-in namespaces are judged exactly as without it.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from muster.kernel import exemptions, findings, observations, reviews, scopes, selectors

__all__ = [
    "DEFAULT_INTERVAL_SECONDS",
    "PIPELINE_NOT_DRIFT",
    "REASON",
    "Candidate",
    "DriftRules",
    "Judged",
    "PassOutcome",
    "active_peer",
    "audit_candidates",
    "audited",
    "candidates",
    "counts",
    "drifted",
    "notice",
    "pod_review",
]

REASON = "PodDrifted"
DEFAULT_INTERVAL_SECONDS = 300.0
# Findings that say the pipeline could not find out (a gate ran out of time or failed), not that
# the pod is wrong: at admission they deny, fail safe; for a running pod they would turn every
# hiccup into a wave of drift. They are seen in the admission error metrics instead. Each area
# adds its own such reasons (``Area.not_drift``: an apiserver or registry that did not answer).
PIPELINE_NOT_DRIFT = frozenset({"DeadlineExceeded", "InternalError"})
_FINISHED = frozenset({"Succeeded", "Failed"})

Candidate = tuple[Mapping[str, Any], findings.Mode]


def candidates(
    pods: Iterable[Mapping[str, Any]],
    namespace_labels: Mapping[str, Mapping[str, str]],
    *,
    own_namespace: str | None,
    selector: selectors.LabelSelector | None = None,
    enforcement: scopes.Enforcement = scopes.NAMESPACED,
) -> list[Candidate]:
    """The pods to re-judge, each with its namespace's mode; namespaces not listed are skipped.

    Namespaces are chosen as admission chooses them (:func:`muster.kernel.scopes.watched_mode`).
    """
    chosen: list[Candidate] = []
    for pod in pods:
        namespace = _running_in(pod)
        if namespace is None or namespace not in namespace_labels:
            continue
        mode = scopes.watched_mode(
            namespace,
            namespace_labels[namespace],
            own_namespace=own_namespace,
            selector=selector,
            enforcement=enforcement,
        )
        if mode is not None:
            chosen.append((pod, mode))
    return chosen


def _running_in(pod: Mapping[str, Any]) -> str | None:
    """The namespace of a pod a pass judges: running, not being deleted, not exempted."""
    metadata = pod.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("deletionTimestamp"):
        return None
    status = pod.get("status")
    if isinstance(status, Mapping) and status.get("phase") in _FINISHED:
        return None
    annotations = metadata.get("annotations")
    if isinstance(annotations, Mapping) and exemptions.ANNOTATION in annotations:
        return None
    namespace = metadata.get("namespace")
    return namespace if isinstance(namespace, str) else None


def audited(
    namespace: str,
    labels: Mapping[str, str] | None,
    *,
    own_namespace: str | None,
    selector: selectors.LabelSelector | None = None,
    enforcement: scopes.Enforcement = scopes.NAMESPACED,
) -> bool:
    """Whether audit judges a namespace: in reach but not judged (not opted in, in the
    namespaced scope). Never one opted out with ``muster.dev/ignore=true`` (even when a
    ``selector`` picks it), the control plane's, Muster's own or an excluded one; never one
    drift already judges, so audit cannot change what happens in opted-in namespaces."""
    if (labels or {}).get(scopes.OPT_OUT_LABEL) == "true":
        return False
    if not scopes.in_reach(
        namespace, labels, own_namespace=own_namespace, selector=selector, enforcement=enforcement
    ):
        return False
    return enforcement.labelled_mode(labels) is None


def audit_candidates(
    pods: Iterable[Mapping[str, Any]],
    namespace_labels: Mapping[str, Mapping[str, str]],
    *,
    own_namespace: str | None,
    selector: selectors.LabelSelector | None = None,
    enforcement: scopes.Enforcement = scopes.NAMESPACED,
) -> list[Mapping[str, Any]]:
    """The running pods of the namespaces audit judges (:func:`audited`)."""
    return [
        pod
        for pod in pods
        if (namespace := _running_in(pod)) is not None
        and namespace in namespace_labels
        and audited(
            namespace,
            namespace_labels[namespace],
            own_namespace=own_namespace,
            selector=selector,
            enforcement=enforcement,
        )
    ]


@dataclasses.dataclass(frozen=True)
class Judged:
    """One pod a pass re-judged and what of it is drift; ``audit`` when its namespace has not
    opted in (found only to be reported, as what enforcement would deny)."""

    pod: Mapping[str, Any]
    findings: tuple[findings.Finding, ...]
    audit: bool = False


@dataclasses.dataclass(frozen=True)
class PassOutcome:
    """What one pass found, for the readers of drift (``muster.reports``).

    ``namespaces``: every namespace the pass judged (opted in or audited), with its labels,
    including those with no running pod; ``unlisted``: those whose pods could not be listed
    this time, so nothing is known about them (keep what was said before).
    """

    judged: tuple[Judged, ...]
    namespaces: Mapping[str, Mapping[str, str]]
    checks: tuple[str, ...]
    unlisted: frozenset[str] = frozenset()


def pod_review(pod: Mapping[str, Any]) -> reviews.Review:
    """The AdmissionReview admission would get for creating ``pod`` as it is stored now."""
    metadata = pod.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    return {
        "apiVersion": reviews.API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": f"drift-{metadata.get('uid') or f'{namespace}/{name}'}",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "name": name,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:muster:drift"},
            "object": dict(pod),
            "dryRun": True,  # nothing is created, and the decision observers stay quiet
        },
    }


@dataclasses.dataclass(frozen=True)
class DriftRules:
    """What a drift pass re-runs and ignores, from the areas' declarations."""

    # The gates a pass runs (and the bounded ``check`` label of ``muster_drifted_pods``): the
    # ones whose answer changes with policies and facts.
    checks: tuple[str, ...]
    # Reasons that say nothing about the pod (see PIPELINE_NOT_DRIFT).
    not_drift: frozenset[str] = PIPELINE_NOT_DRIFT


def drifted(found: Iterable[findings.Finding], rules: DriftRules) -> tuple[findings.Finding, ...]:
    """The findings that are drift: of a drift check, and about the pod (not the gate)."""
    return tuple(f for f in found if f.check in rules.checks and f.reason not in rules.not_drift)


def counts(results: Iterable[Sequence[findings.Finding]], checks: Iterable[str]) -> dict[str, int]:
    """Pods with at least one finding, per check; every check in ``checks`` at least at zero."""
    total = dict.fromkeys(checks, 0)
    for found in results:
        for check in {finding.check for finding in found}:
            total[check] = total.get(check, 0) + 1
    return total


def notice(pod: Mapping[str, Any], found: Sequence[findings.Finding]) -> observations.Notice:
    """The Warning Event on a drifted pod, naming every finding (sorted, so repeats fold)."""
    metadata = pod.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    lines = sorted({f"[{f.check}] {f}" for f in found})
    return observations.Notice(
        target=observations.ObjectRef(
            api_version="v1",
            kind="Pod",
            name=name,
            namespace=namespace,
            uid=str(metadata.get("uid") or ""),
        ),
        delivery=observations.Delivery.NOW,
        type=observations.EventType.WARNING,
        reason=REASON,
        action="Rejudge",
        note=observations.truncate_note(
            "this running pod would no longer be admitted: " + "; ".join(lines)
        ),
        namespace=namespace,
    )


def active_peer(status: Mapping[str, Any] | None, priority: int, now: datetime.datetime) -> bool:
    """Whether a replica of ``priority`` runs the controllers, by kopf's own peering rule.

    kopf pauses a replica while a live peer (``lastseen + lifetime`` after ``now``) has a
    higher priority, and pauses every replica while two live peers share one. The status lists
    this replica too, under an identity it does not know: two live entries at its own priority
    are a tie (it and another), one is itself.
    """
    same = 0
    for peer in (status or {}).values():
        if not isinstance(peer, Mapping):
            continue
        try:
            other = int(peer.get("priority", 0))
            lifetime = datetime.timedelta(seconds=int(peer.get("lifetime", 60)))
            lastseen = datetime.datetime.fromisoformat(str(peer["lastseen"]))
        except (KeyError, TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        if lastseen + lifetime <= now:
            continue  # dead: kopf ignores it (and cleans it up)
        if other > priority:
            return False
        same += other == priority
    return same < 2
