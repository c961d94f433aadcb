"""AdmissionReview bodies: ``reviews.validate`` then ``subjects.from_review``.

Documented errors: ``reviews.MalformedReview`` (a ``ValueError``) for any body that is not a
judgeable review. A validated review must always yield a subject or None, never raise, and a
subject's templates must point into the object that was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["muster"]):
    from muster.kernel import findings, reviews, scopes, subjects

_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "team"},
    "spec": {"containers": [{"name": "c", "image": "registry.example/app@sha256:" + "a" * 64}]},
}


def _review(resource: str, obj: object, **extra: object) -> bytes:
    group = "apps" if resource in {"deployments", "statefulsets"} else ""
    request = {
        "uid": "u-1",
        "kind": {"group": group, "version": "v1", "kind": "X"},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "operation": "CREATE",
        "userInfo": {"username": "alice"},
        "namespace": "team",
        "object": obj,
        **extra,
    }
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def seeds() -> Iterator[bytes]:
    yield _review("pods", _POD)
    yield _review("pods", _POD, subResource="ephemeralcontainers", operation="UPDATE")
    yield _review("pods", None, oldObject=_POD, operation="DELETE")
    yield _review("deployments", {"spec": {"template": _POD}})
    yield _review("statefulsets", {"metadata": {}, "spec": {"template": {"spec": None}}})
    yield b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}'


def test_one_input(data: bytes) -> None:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return  # the webhook rejects bodies that are not JSON before validation
    try:
        review = reviews.validate(body)
    except reviews.MalformedReview as error:
        _fuzzing.check(bool(str(error)), "MalformedReview without a message")
        return
    for mode in findings.Mode:
        subject = subjects.from_review(review, mode=mode, own_namespace="muster-system")
        if subject is None:
            continue
        _fuzzing.check(subject.uid == review["request"]["uid"], "subject uid differs")
        _fuzzing.check(
            subject.namespace not in {*scopes.NEVER_JUDGED, "muster-system"},
            f"judged a protected namespace {subject.namespace!r}",
        )
        for template in subject.templates:
            _fuzzing.check(template.pointer.startswith("/"), f"bad pointer {template.pointer!r}")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
