"""Kubernetes label selectors, as every Muster policy uses them to pick namespaces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pydantic
from pydantic import alias_generators

__all__ = ["LabelSelector", "LabelSelectorRequirement", "matches"]

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
    # Validators are built on first use: a command builds only those it validates with.
    defer_build=True,
)


class LabelSelectorRequirement(pydantic.BaseModel):
    model_config = _CONFIG

    key: str = pydantic.Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @pydantic.model_validator(mode="after")
    def _values(self) -> LabelSelectorRequirement:
        needs = self.operator in ("In", "NotIn")
        if needs and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if not needs and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def holds(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present  # DoesNotExist


class LabelSelector(pydantic.BaseModel):
    """A Kubernetes label selector; an empty one selects everything."""

    model_config = _CONFIG

    match_labels: dict[str, str] = pydantic.Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


def matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes semantics; no selector, like an empty one, matches everything."""
    if selector is None:
        return True
    return all(labels.get(key) == value for key, value in selector.match_labels.items()) and all(
        requirement.holds(labels) for requirement in selector.match_expressions
    )
