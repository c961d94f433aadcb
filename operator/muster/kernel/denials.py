"""What a policy tells the person its denials reach: its own words, a help page, an owner.

Every policy kind (ImagePolicy, GPUStackPolicy, ModelPolicy) carries the same optional
``spec.denial``; a finding the policy decided shows it under the finding's line, so the person
denied learns the house rules and whom to ask without knowing Muster.
"""

from __future__ import annotations

from typing import Annotated

import pydantic
from pydantic import alias_generators

__all__ = ["DenialSpec"]

_Line = Annotated[
    str, pydantic.StringConstraints(strip_whitespace=True, min_length=1, max_length=256)
]


class DenialSpec(pydantic.BaseModel):
    """Shown with every denial (and warning) the policy decides; each field optional."""

    model_config = pydantic.ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        # Validators are built on first use: a command builds only those it validates with.
        defer_build=True,
    )

    message: _Line | None = pydantic.Field(
        default=None, description="the policy's own words, e.g. how this team signs images"
    )
    help_url: Annotated[str, pydantic.StringConstraints(pattern=r"^https?://\S{1,500}$")] | None = (
        pydantic.Field(default=None, alias="helpURL", description="a page that explains the rule")
    )
    owner: _Line | None = pydantic.Field(
        default=None, description="whom to ask: a team, a channel, an address"
    )

    def lines(self) -> list[str]:
        """The policy's part of a denial message, one short line per field set."""
        found = []
        if self.message:
            found.append(self.message)
        if self.help_url:
            found.append(f"help: {self.help_url}")
        if self.owner:
            found.append(f"ask: {self.owner}")
        return found
