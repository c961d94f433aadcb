"""Several gates' patches, each written against the object as it arrived, made one."""

from __future__ import annotations

from typing import Any

import pytest

from muster.kernel import jsonpatches

pytestmark = pytest.mark.unit

POD: dict[str, Any] = {
    "metadata": {"name": "p"},
    "spec": {
        "initContainers": [{"name": "setup", "image": "setup:1"}],
        "containers": [{"name": "main", "image": "main:1"}],
    },
}


def test_one_patch_passes_through_unchanged() -> None:
    patch = [{"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}}]
    assert jsonpatches.combine(POD, [patch, []]) == patch


def test_independent_patches_are_concatenated() -> None:
    first = [{"op": "replace", "path": "/spec/containers/0/image", "value": "main@sha256:1"}]
    second = [{"op": "add", "path": "/metadata/labels", "value": {"l": "true"}}]
    assert jsonpatches.combine(POD, [first, second]) == first + second


def test_two_gates_adding_the_same_missing_map_keep_both_entries() -> None:
    first = [
        {"op": "add", "path": "/metadata/annotations", "value": {"muster.dev/models": "[]"}},
        {"op": "add", "path": "/metadata/labels", "value": {"muster.dev/uses-models": "true"}},
    ]
    second = [
        {"op": "add", "path": "/metadata/annotations", "value": {"muster.dev/datasets": "[]"}},
        {"op": "add", "path": "/metadata/labels", "value": {"muster.dev/uses-datasets": "true"}},
    ]
    # Chained, the second add replaces the first map: the models' entries would be lost.
    chained = jsonpatches.apply(POD, first + second)
    assert "muster.dev/models" not in chained["metadata"]["annotations"]
    combined = jsonpatches.apply(POD, jsonpatches.combine(POD, [first, second]))
    assert combined["metadata"]["annotations"] == {
        "muster.dev/models": "[]",
        "muster.dev/datasets": "[]",
    }
    assert combined["metadata"]["labels"] == {
        "muster.dev/uses-models": "true",
        "muster.dev/uses-datasets": "true",
    }


def test_init_containers_added_by_two_gates_and_an_image_pinned_by_a_third() -> None:
    bare = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main"}]}}
    first = [{"op": "add", "path": "/spec/initContainers", "value": [{"name": "verify-m"}]}]
    second = [{"op": "add", "path": "/spec/initContainers", "value": [{"name": "verify-d"}]}]
    combined = jsonpatches.apply(bare, jsonpatches.combine(bare, [first, second]))
    assert [c["name"] for c in combined["spec"]["initContainers"]] == ["verify-m", "verify-d"]
    # With an init container already there, inserts at index 0 and a pin of index 0 written
    # against the original must still pin "setup", not a verifier inserted before it.
    insert_m = [{"op": "add", "path": "/spec/initContainers/0", "value": {"name": "verify-m"}}]
    insert_d = [{"op": "add", "path": "/spec/initContainers/0", "value": {"name": "verify-d"}}]
    pin = [{"op": "replace", "path": "/spec/initContainers/0/image", "value": "setup@sha256:1"}]
    combined = jsonpatches.apply(POD, jsonpatches.combine(POD, [insert_m, pin, insert_d]))
    assert combined["spec"]["initContainers"] == [
        {"name": "verify-m"},
        {"name": "verify-d"},
        {"name": "setup", "image": "setup@sha256:1"},
    ]


def test_a_broken_patch_is_passed_on_for_the_apiserver_to_refuse() -> None:
    broken = [{"op": "replace", "path": "/spec/nothing/0", "value": 1}]
    other = [{"op": "add", "path": "/metadata/labels", "value": {}}]
    assert jsonpatches.combine(POD, [broken, other]) == broken + other
