"""Dataset lineage: cycles, self-reference, missing and invalid parents, deep chains, revocation."""

from __future__ import annotations

import pytest

from muster.datasets.rules import lineage, registry

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "c" * 64


def _index(
    graph: dict[str, list[str]], revoked: dict[str, str | None] | None = None
) -> registry.DatasetIndex:
    index = registry.DatasetIndex()
    for name, parents in graph.items():
        spec: dict[str, object] = {"digest": DIGEST, "lineage": {"parents": parents}}
        if revoked and name in revoked:
            spec["revoked"] = True
            if revoked[name] is not None:
                spec["revocationReason"] = revoked[name]
        index.put_dataset(registry.parse_dataset(name, spec, {}, generation=1))
    return index


def test_a_sound_lineage_has_no_problems() -> None:
    index = _index({"raw": [], "clean": ["raw"], "mix": ["clean", "raw"]})
    assert lineage.problems("mix", index) == []
    assert lineage.ancestors("mix", index) == ["clean", "raw"]
    assert lineage.descendants("raw", index) == {"clean", "mix"}
    assert lineage.revoked_through("mix", index) is None


def test_a_dataset_naming_itself() -> None:
    index = _index({"loop": ["loop"]})
    found = lineage.diagnose("loop", index)
    assert [p.kind for p in found] == ["self-reference"]
    assert found[0].text == "Dataset 'loop' names itself as a parent"
    assert lineage.ancestors("loop", index) == []
    assert lineage.descendants("loop", index) == set()


def test_a_cycle_is_named_from_the_dataset() -> None:
    index = _index({"a": ["b"], "b": ["c"], "c": ["a"]})
    assert lineage.problems("a", index) == ["lineage cycle: a -> b -> c -> a"]
    assert lineage.ancestors("a", index) == ["b", "c"]
    assert lineage.descendants("a", index) == {"b", "c"}


def test_a_cycle_further_up_taints_the_descendant() -> None:
    index = _index({"leaf": ["x"], "x": ["y"], "y": ["x"]})
    assert lineage.problems("leaf", index) == ["lineage reaches a cycle: x -> y -> x"]
    assert lineage.problems("x", index) == ["lineage cycle: x -> y -> x"]


def test_missing_and_invalid_parents_are_named() -> None:
    index = _index({"leaf": ["mid", "gone"], "mid": ["lost"]})
    index.invalid["Dataset/gone"] = "license: bad expression"
    found = lineage.diagnose("leaf", index)
    assert [(p.kind, p.text) for p in found] == [
        ("invalid", "parent 'gone' is invalid: license: bad expression"),
        ("missing", "ancestor 'lost' (of 'mid') is not a registered Dataset"),
    ]


def test_unregistered_or_invalid_dataset() -> None:
    index = _index({})
    assert lineage.problems("nothing", index) == ["Dataset 'nothing' is not registered"]
    index.invalid["Dataset/broken"] = "digest: bad"
    assert lineage.problems("broken", index) == ["Dataset 'broken' is invalid: digest: bad"]
    assert lineage.revoked_through("nothing", index) is None


def test_deep_lineage_is_walked_without_recursion() -> None:
    depth = 5000
    graph = {f"d{i}": ([f"d{i + 1}"] if i + 1 < depth else []) for i in range(depth)}
    graph[f"d{depth - 1}"] = ["d0"]  # and closes into one long cycle
    index = _index(graph)
    found = lineage.problems("d0", index)
    assert len(found) == 1 and found[0].startswith("lineage cycle: d0 -> d1 -> ")
    assert len(lineage.ancestors("d0", index)) == depth - 1
    assert len(lineage.descendants("d0", index)) == depth - 1


def test_revoked_through_finds_itself_or_the_nearest_revoked_ancestor() -> None:
    index = _index(
        {"base": [], "mid": ["base"], "leaf": ["mid"], "other": []},
        revoked={"base": "licence withdrawn", "mid": None},
    )
    assert lineage.revoked_through("base", index) == ("base", "licence withdrawn")
    assert lineage.revoked_through("leaf", index) == ("mid", "no reason given")
    assert lineage.revoked_through("other", index) is None


def test_revocation_crosses_a_cycle_without_looping() -> None:
    index = _index({"a": ["b"], "b": ["a", "c"], "c": []}, revoked={"c": "poisoned"})
    assert lineage.revoked_through("a", index) == ("c", "poisoned")
    assert lineage.descendants("c", index) == {"a", "b"}
