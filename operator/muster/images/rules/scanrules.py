"""An ``ImagePolicy``'s ``vulnerabilities`` section: which known vulnerabilities an image may carry.

It is part of the ImagePolicy's schema, so it lives with the image gate; the vulnerability gate
(``muster.vulnerabilities``) judges trivy's findings against it.
"""

from __future__ import annotations

import datetime
from typing import Literal

import pydantic
from pydantic import alias_generators

__all__ = ["SEVERITIES", "AllowedVulnerability", "Severity", "VulnerabilityRules", "severity_rank"]

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_CVE = r"^[A-Za-z0-9][-A-Za-z0-9_.:]{0,127}$"

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
    # Validators are built on first use: a command builds only those it validates with.
    defer_build=True,
)

Severity = Literal["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"]


def severity_rank(severity: str) -> int:
    """UNKNOWN 0 .. CRITICAL 4; anything else counts as UNKNOWN."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


class AllowedVulnerability(pydantic.BaseModel):
    """One accepted vulnerability, until ``expires`` (a date; afterwards it counts again)."""

    model_config = _CONFIG

    id: str = pydantic.Field(pattern=_CVE, description="CVE or advisory id, e.g. CVE-2024-3094")
    expires: datetime.date = pydantic.Field(description="last day the exception holds (UTC)")
    reason: str = pydantic.Field(default="", max_length=1024)


class VulnerabilityRules(pydantic.BaseModel):
    """Which known vulnerabilities an image covered by the policy may carry."""

    model_config = _CONFIG

    max_severity: Severity = pydantic.Field(
        default="HIGH",
        description="the worst severity allowed; a finding above it is a violation",
    )
    ignore_unfixed: bool = pydantic.Field(
        default=False, description="findings without a fixed version do not count"
    )
    allow: tuple[AllowedVulnerability, ...] = pydantic.Field(
        default=(), max_length=256, description="accepted vulnerabilities, each with an expiry"
    )
    when_unscanned: Literal["allow", "warn", "deny"] = pydantic.Field(
        default="warn", description="what to do while no scan of the image digest exists yet"
    )
