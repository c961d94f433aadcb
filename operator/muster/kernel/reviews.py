"""AdmissionReview wire format (admission.k8s.io/v1): typed shapes, validation, responses.

The apiserver always sends well-formed reviews, but anything that can reach the webhook port
can send anything. Validation here turns every malformed body into a clear message instead of a
KeyError deep inside a handler; the webhook answers it with a denying AdmissionReview.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "MalformedReview",
    "Operation",
    "RequestPayload",
    "Response",
    "Review",
    "build_response",
    "validate",
]

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class RequestPayload(TypedDict):
    uid: str
    kind: dict[str, str]
    resource: GroupVersionResource
    subResource: NotRequired[str]
    namespace: NotRequired[str]
    name: NotRequired[str]
    operation: Operation
    userInfo: UserInfo
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]


class Review(TypedDict):
    apiVersion: str
    kind: str
    request: RequestPayload


class ResponseStatus(TypedDict, total=False):
    message: str
    code: int


class ResponsePayload(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[ResponseStatus]
    warnings: NotRequired[list[str]]
    patch: NotRequired[str]
    patchType: NotRequired[Literal["JSONPatch"]]


class Response(TypedDict):
    apiVersion: str
    kind: str
    response: ResponsePayload


class MalformedReview(ValueError):
    """The body is JSON but not an AdmissionReview Muster can judge; the text says why."""

    def __init__(self, message: str, *, uid: str = "") -> None:
        super().__init__(message)
        self.uid = uid


def _require(
    mapping: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str
) -> Any:
    if key not in mapping:
        raise MalformedReview(f"{where}.{key} is missing")
    value = mapping[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MalformedReview(f"{where}.{key} must be {names}, not {type(value).__name__}")
    return value


def _check(data: dict[str, Any]) -> None:
    api_version = _require(data, "apiVersion", str, "review")
    kind = _require(data, "kind", str, "review")
    if kind != KIND:
        raise MalformedReview(f"review.kind must be {KIND!r}, not {kind!r}")
    if api_version not in (API_VERSION, "admission.k8s.io/v1beta1"):
        raise MalformedReview(f"review.apiVersion {api_version!r} is not supported")
    request = _require(data, "request", dict, "review")
    _require(request, "uid", str, "request")
    resource = _require(request, "resource", dict, "request")
    for key in ("group", "version", "resource"):
        _require(resource, key, str, "request.resource")
    _require(request, "kind", dict, "request")
    operation = _require(request, "operation", str, "request")
    if operation not in OPERATIONS:
        raise MalformedReview(f"request.operation {operation!r} is not one of {OPERATIONS}")
    _require(request, "userInfo", dict, "request")
    for key in ("object", "oldObject"):
        if request.get(key) is not None and not isinstance(request[key], dict):
            raise MalformedReview(f"request.{key} must be an object or null")
    if request.get("object") is None and request.get("oldObject") is None:
        raise MalformedReview("request has neither object nor oldObject")
    for key in ("object", "oldObject"):
        metadata = (request.get(key) or {}).get("metadata")
        for field in ("namespace", "name"):
            value = metadata.get(field) if isinstance(metadata, dict) else None
            if value is not None and not isinstance(value, str):
                raise MalformedReview(f"request.{key}.metadata.{field} must be a string")
    for key in ("namespace", "name", "subResource"):
        if key in request and not isinstance(request[key], str):
            raise MalformedReview(f"request.{key} must be a string")


def validate(data: object) -> Review:
    """Check that ``data`` (decoded JSON) is a judgeable AdmissionReview request."""
    if not isinstance(data, dict):
        raise MalformedReview(f"body must be a JSON object, not {type(data).__name__}")
    request = data.get("request")
    uid = request.get("uid") if isinstance(request, dict) else None
    try:
        _check(data)
    except MalformedReview as error:
        # Echo the uid whenever there is one, so the apiserver can match the answer.
        error.uid = uid if isinstance(uid, str) else ""
        raise
    return data  # type: ignore[return-value]  # shape checked field by field above


def build_response(
    *,
    uid: str,
    allowed: bool,
    message: str | None = None,
    code: int | None = None,
    warnings: Sequence[str] = (),
    patch: Sequence[Mapping[str, Any]] = (),
    api_version: str = API_VERSION,
) -> Response:
    """An AdmissionReview response; a denial always carries a message and an HTTP-like code."""
    payload = ResponsePayload(uid=uid, allowed=allowed)
    if not allowed:
        payload["status"] = ResponseStatus(message=message or "denied", code=code or 403)
    elif message:
        payload["status"] = ResponseStatus(message=message, code=code or 200)
    if warnings:
        payload["warnings"] = list(warnings)
    if patch:
        payload["patch"] = base64.b64encode(json.dumps(list(patch)).encode()).decode("ascii")
        payload["patchType"] = "JSONPatch"
    return Response(apiVersion=api_version, kind=KIND, response=payload)
