from __future__ import annotations

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.kernel import selectors

pytestmark = pytest.mark.unit


def selector(**raw: object) -> selectors.LabelSelector:
    return selectors.LabelSelector.model_validate(raw)


@pytest.mark.parametrize(
    ("raw", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"team": "ml"}}, {"team": "ml", "x": "y"}, True),
        ({"matchLabels": {"team": "ml"}}, {"team": "web"}, False),
        (
            {"matchExpressions": [{"key": "t", "operator": "In", "values": ["a", "b"]}]},
            {"t": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]},
            {"t": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, {"t": ""}, True),
        ({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, {"t": ""}, False),
    ],
)
def test_kubernetes_semantics(
    raw: dict[str, object], labels: dict[str, str], expected: bool
) -> None:
    assert selectors.matches(selector(**raw), labels) is expected


def test_no_selector_matches_everything() -> None:
    assert selectors.matches(None, {"any": "thing"})


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ({"matchExpressions": [{"key": "t", "operator": "In"}]}, "needs values"),
        (
            {"matchExpressions": [{"key": "t", "operator": "Exists", "values": ["a"]}]},
            "takes no values",
        ),
        ({"matchExpressions": [{"key": "t", "operator": "Near", "values": ["a"]}]}, "operator"),
        ({"matchLabel": {"a": "b"}}, "Extra inputs"),
    ],
)
def test_malformed_selectors_are_refused(raw: dict[str, object], complaint: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=complaint):
        selector(**raw)


@settings(max_examples=200, deadline=None)
@given(
    match_labels=st.dictionaries(st.sampled_from("abc"), st.sampled_from("xy"), max_size=2),
    labels=st.dictionaries(st.sampled_from("abcd"), st.sampled_from("xyz"), max_size=4),
)
def test_match_labels_equal_in_expressions(
    match_labels: dict[str, str], labels: dict[str, str]
) -> None:
    # matchLabels {k: v} means exactly the expression "k In [v]".
    as_labels = selector(matchLabels=match_labels)
    as_expressions = selector(
        matchExpressions=[
            {"key": k, "operator": "In", "values": [v]} for k, v in match_labels.items()
        ]
    )
    assert selectors.matches(as_labels, labels) == selectors.matches(as_expressions, labels)
