"""Pure admission helpers shared by the pipeline: answers for requests no gate needs to see."""

from __future__ import annotations

from muster.kernel import findings, reviews

__all__ = ["not_judged", "unjudgeable"]


def not_judged(review: reviews.Review) -> reviews.Response:
    """Muster has no business with this request: admit it unchanged."""
    return reviews.build_response(
        uid=review["request"]["uid"], allowed=True, api_version=review["apiVersion"]
    )


def unjudgeable(uid: str, mode: findings.Mode, message: str, code: int) -> reviews.Response:
    """Fail safe: what cannot be judged is denied in enforce mode, warned about in warn mode."""
    if mode is findings.Mode.WARN:
        return reviews.build_response(
            uid=uid, allowed=True, warnings=[f"muster: not judged: {message}"]
        )
    return reviews.build_response(uid=uid, allowed=False, message=f"muster: {message}", code=code)
