from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.kernel import reviews

pytestmark = pytest.mark.unit


def review(**request_overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "abc",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "team",
        "operation": "CREATE",
        "userInfo": {"username": "alice"},
        "object": {"metadata": {"name": "p"}, "spec": {"containers": []}},
    }
    request.update(request_overrides)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def test_a_well_formed_review_validates() -> None:
    data = review()
    assert reviews.validate(copy.deepcopy(data)) == data


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d.pop("request"), "review.request is missing"),
        (lambda d: d.update(kind="Pod"), "review.kind must be 'AdmissionReview'"),
        (lambda d: d.update(apiVersion="v2"), "not supported"),
        (lambda d: d["request"].pop("uid"), "request.uid is missing"),
        (lambda d: d["request"].update(uid=5), "request.uid must be str"),
        (lambda d: d["request"].update(operation="PATCH"), "request.operation 'PATCH'"),
        (
            lambda d: d["request"]["resource"].pop("resource"),
            "request.resource.resource is missing",
        ),
        (lambda d: d["request"].update(object=[1]), "request.object must be an object"),
        (lambda d: d["request"].update(object=None), "neither object nor oldObject"),
        (lambda d: d["request"].update(namespace=3), "request.namespace must be a string"),
    ],
)
def test_malformed_reviews_say_what_is_wrong(mutate: Any, complaint: str) -> None:
    data = review()
    mutate(data)
    with pytest.raises(reviews.MalformedReview, match=complaint) as raised:
        reviews.validate(data)
    if "request" in data and isinstance(data["request"].get("uid"), str):
        assert raised.value.uid == "abc"


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["apiVersion", "kind", "request", "uid", "resource", "operation", "object"]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_is_validated_or_rejected_with_a_message(data: object) -> None:
    try:
        reviews.validate(data)
    except reviews.MalformedReview as error:
        assert str(error)


def test_denial_always_has_a_message_and_code() -> None:
    response = reviews.build_response(uid="u", allowed=False)
    assert response["response"]["status"] == {"message": "denied", "code": 403}


def test_patch_is_base64_json_patch() -> None:
    patch = [{"op": "replace", "path": "/spec/containers/0/image", "value": "x@sha256:1"}]
    response = reviews.build_response(uid="u", allowed=True, patch=patch, warnings=["w"])
    assert response["response"]["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["response"]["patch"])) == patch
    assert response["response"]["warnings"] == ["w"]
