"""Judging one AdmissionReview: the whole decision, from a validated review to a response.

The webhook server only decodes JSON and encodes the answer; everything in between is here,
pure, so every admission outcome is testable without a server or a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from muster.core import findings, pinning, pods, reviews, scopes

__all__ = ["JUDGED_OPERATIONS", "mutate", "validate"]

JUDGED_OPERATIONS = frozenset({"CREATE", "UPDATE"})
_POD_SUBRESOURCES = frozenset({"", "ephemeralcontainers"})


def _pod_spec(request: reviews.RequestPayload) -> Mapping[str, Any] | None:
    """The spec of the pod under review, or None when this request is not about pod content."""
    resource = request["resource"]
    if resource["group"] != "" or resource["resource"] != "pods":
        return None
    if request.get("subResource", "") not in _POD_SUBRESOURCES:
        return None
    obj = request.get("object") or {}
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _decide(
    review: reviews.Review, mode: findings.Mode, own_namespace: str | None
) -> findings.Verdict | None:
    request = review["request"]
    if request["operation"] not in JUDGED_OPERATIONS:
        return None
    # A misconfigured webhook must still never judge the control plane or Muster itself.
    namespace = request.get("namespace") or (request.get("object") or {}).get("metadata", {}).get(
        "namespace"
    )
    if (
        scopes.mode_for_namespace(
            namespace, {scopes.ENFORCE_LABEL: mode.value}, own_namespace=own_namespace
        )
        is None
    ):
        return None
    spec = _pod_spec(request)
    if spec is None:
        return None
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return findings.judge(
            [
                findings.Finding(
                    check="pod-shape",
                    reason="PodSpecInvalid",
                    subject="pod",
                    message="has no containers to judge",
                    mode=mode,
                )
            ]
        )
    return findings.judge(pinning.unpinned(pods.image_uses(spec), mode=mode))


def validate(
    review: reviews.Review, *, mode: findings.Mode, own_namespace: str | None
) -> reviews.Response:
    """Admit, warn about or deny the object under review."""
    verdict = _decide(review, mode, own_namespace)
    uid = review["request"]["uid"]
    if verdict is None:
        return reviews.build_response(uid=uid, allowed=True, api_version=review["apiVersion"])
    return reviews.build_response(
        uid=uid,
        allowed=verdict.allowed,
        message=None if verdict.allowed else verdict.message(),
        code=403,
        warnings=verdict.warning_lines(),
        api_version=review["apiVersion"],
    )


def mutate(
    review: reviews.Review, *, mode: findings.Mode, own_namespace: str | None
) -> reviews.Response:
    """The mutating pass: it never denies (validation does), it only rewrites.

    Rewriting tags to digests needs the registry client; until a policy asks for it the
    mutating pass admits unchanged, so that the validating pass sees what the user wrote.
    """
    del mode, own_namespace  # used once pinning by resolution exists
    return reviews.build_response(
        uid=review["request"]["uid"], allowed=True, api_version=review["apiVersion"]
    )
