"""The contract between the admission pipeline and the gates (images, GPU stack, models).

A gate looks at a :class:`~muster.kernel.subjects.Subject` and returns findings (validation) or
JSON patch operations (mutation). Gates that need I/O live in ``muster.adapters``; the types and
the way their results become one AdmissionReview answer are pure and live here.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from muster.kernel import findings, jsonpatches, reviews, subjects

__all__ = ["Gate", "GateResult", "Phase", "registry_unavailable", "respond"]


class Phase(enum.StrEnum):
    MUTATE = "mutate"  # rewrites (pin digests, add node affinity, inject verifiers); never denies
    VALIDATE = "validate"  # judges what the object finally is; never rewrites


@dataclasses.dataclass(frozen=True, slots=True)
class GateResult:
    findings: tuple[findings.Finding, ...] = ()
    patch: tuple[Mapping[str, Any], ...] = ()


class Gate(Protocol):
    """One check. ``judge`` must not raise for bad input: bad input is a finding."""

    @property
    def name(self) -> str: ...

    async def judge(self, subject: subjects.Subject, phase: Phase) -> GateResult: ...


def registry_unavailable(check: str, reason: str, message: str) -> GateResult:
    """The result of a gate that cannot read the registry it approves from (its findings'
    subject is the check's name): it fails safe, since without the registry nothing can be
    approved (the namespace mode still turns this into a warning in warn namespaces)."""
    return GateResult(
        findings=(findings.Finding(check=check, reason=reason, subject=check, message=message),)
    )


def _effective(finding: findings.Finding, namespace_mode: findings.Mode) -> findings.Finding:
    # A namespace in warn mode is being rolled out: nothing in it is denied, whatever the policy.
    if namespace_mode is findings.Mode.WARN and finding.mode is findings.Mode.ENFORCE:
        return dataclasses.replace(finding, mode=findings.Mode.WARN)
    return finding


def verdict(subject: subjects.Subject, results: Sequence[GateResult]) -> findings.Verdict:
    return findings.judge(
        _effective(finding, subject.mode) for result in results for finding in result.findings
    )


def respond(
    subject: subjects.Subject, results: Sequence[GateResult], phase: Phase, *, footer: str = ""
) -> reviews.Response:
    """One AdmissionReview answer from every gate's result (``footer`` ends a denial)."""
    judged = verdict(subject, results)
    if phase is Phase.MUTATE:
        # Each gate wrote its patch against the object as it arrived: combined, not chained.
        patch = jsonpatches.combine(subject.object, [result.patch for result in results])
        return reviews.build_response(
            uid=subject.uid,
            allowed=True,
            warnings=judged.warning_lines(),
            patch=patch,
            api_version=subject.api_version,
        )
    return reviews.build_response(
        uid=subject.uid,
        allowed=judged.allowed,
        message=None if judged.allowed else judged.message(footer=footer),
        code=403,
        warnings=judged.warning_lines(),
        api_version=subject.api_version,
    )
