"""The two small pieces ``muster check`` adds: JSON patch application and the object store."""

from __future__ import annotations

import asyncio

import pytest

from muster.kernel import jsonpatches
from muster.platform import kubeapi, objectstore

pytestmark = pytest.mark.unit

POD = {"spec": {"containers": [{"name": "a", "image": "x"}], "volumes": []}}


def test_patches_add_replace_remove_without_touching_the_input() -> None:
    patched = jsonpatches.apply(
        POD,
        [
            {"op": "replace", "path": "/spec/containers/0/image", "value": "x@sha256:1"},
            {"op": "add", "path": "/spec/initContainers", "value": [{"name": "v"}]},
            {"op": "add", "path": "/spec/initContainers/-", "value": {"name": "w"}},
            {"op": "add", "path": "/spec/initContainers/0", "value": {"name": "u"}},
            {"op": "add", "path": "/metadata", "value": {"annotations": {"a/b": "1"}}},
            {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
            {"op": "remove", "path": "/spec/volumes"},
        ],
    )
    assert patched["spec"]["containers"][0]["image"] == "x@sha256:1"
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["u", "v", "w"]
    assert patched["metadata"] == {"annotations": {"a/b": "2"}}
    assert "volumes" not in patched["spec"]
    assert POD["spec"]["containers"][0]["image"] == "x"


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        ({"op": "replace", "path": "/spec/missing", "value": 1}, "no member 'missing'"),
        ({"op": "add", "path": "/spec/containers/5", "value": 1}, "out of range"),
        ({"op": "add", "path": "spec", "value": 1}, "does not start with '/'"),
        ({"op": "move", "path": "/spec", "from": "/x"}, "unsupported operation"),
        ({"op": "add", "path": "/spec/containers/x", "value": 1}, "not an array index"),
        ({"op": "add", "path": "", "value": 1}, "whole document"),
    ],
)
def test_bad_patches_are_refused_by_name(operation: dict[str, object], message: str) -> None:
    with pytest.raises(jsonpatches.InvalidPatch, match=message):
        jsonpatches.apply(POD, [operation])


def test_plural_names_follow_the_rest_mapper() -> None:
    assert [
        objectstore.plural_of(kind)
        for kind in ("Pod", "ImagePolicy", "GPUStackPolicy", "PyTorchJob", "Gateway", "Ingress")
    ] == ["pods", "imagepolicies", "gpustackpolicies", "pytorchjobs", "gateways", "ingresses"]


def test_the_store_answers_lists_names_and_404s_and_refuses_writes() -> None:
    store = objectstore.ObjectStore(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "key", "namespace": "ml", "labels": {"a": "1"}},
            },
            {"apiVersion": "muster.dev/v1alpha1", "kind": "Model", "metadata": {"name": "m"}},
        ]
    )

    async def scenario() -> None:
        assert (await store.get("/api/v1/namespaces/ml"))["metadata"]["name"] == "ml"
        assert (await store.get("/api/v1/namespaces/ml/secrets/key"))["kind"] == "Secret"
        models = await store.get("/apis/muster.dev/v1alpha1/models")
        assert [m["metadata"]["name"] for m in models["items"]] == ["m"]
        assert len((await store.get("/api/v1/secrets", {"labelSelector": "a=1"}))["items"]) == 1
        assert (await store.get("/api/v1/secrets", {"labelSelector": "a=2"}))["items"] == []
        for missing in ("/api/v1/namespaces/other", "/api/v1/namespaces/ml/secrets/nope"):
            with pytest.raises(kubeapi.ApiError) as error:
                await store.get(missing)
            assert error.value.status == 404
        with pytest.raises(kubeapi.ApiError) as refused:
            await store.patch("/api/v1/namespaces/ml", {"metadata": {}})
        assert refused.value.status == 405

    asyncio.run(scenario())
