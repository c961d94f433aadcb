"""Findings and verdicts: what every gate returns, and how a verdict reads to a person."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from muster.kernel import crds, denials

__all__ = ["POLICY_API_VERSION", "Finding", "Mode", "PolicyRef", "Verdict", "attributed", "judge"]

POLICY_API_VERSION = f"{crds.GROUP}/{crds.VERSION}"  # the API version of Muster's policies


class Mode(enum.StrEnum):
    """What a violation does: ``enforce`` denies, ``warn`` admits with a warning."""

    ENFORCE = "enforce"
    WARN = "warn"


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyRef:
    """The policy object that decided a finding (an ImagePolicy, a GPUStackPolicy, a
    ModelPolicy); Muster's policies are cluster-scoped, so ``namespace`` is empty for them."""

    kind: str
    name: str
    namespace: str = ""
    api_version: str = POLICY_API_VERSION
    # The policy's own words to the person denied (``spec.denial``); not part of its identity.
    denial: denials.DenialSpec | None = dataclasses.field(default=None, compare=False)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One violation of one rule by one part of a workload.

    ``reason`` is a stable CamelCase identifier (used for Events and metrics);
    ``message`` is the one line a person reads. ``policy`` names the policy object that
    decided it, when one did (a denied pod with no owner is reported on that object); rules that
    are no object's (digest pinning, exemptions, failures of Muster itself) leave it ``None``.
    """

    check: str
    reason: str
    subject: str
    message: str
    mode: Mode = Mode.ENFORCE
    policy: PolicyRef | None = None

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"

    def line(self, *, separator: str = "\n  ") -> str:
        """The finding as shown to the person denied: its reason code, then the deciding
        policy's own message, help page and owner (``spec.denial``), when it sets them."""
        text = f"{self} [{self.reason}]"
        said = self.policy.denial.lines() if self.policy and self.policy.denial else []
        if said:
            text += f"{separator}{self.policy}: " + separator.join(said)
        return text


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of judging one object: denials block it, warnings travel with it."""

    denials: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.denials

    def message(self, *, prefix: str = "muster", footer: str = "") -> str:
        """One line per denial, the way the apiserver shows it to ``kubectl`` users; then
        ``footer`` (what applies to the whole request, such as how to ask for an exemption)."""
        lines = [finding.line() for finding in self.denials]
        if len(lines) == 1:
            text = f"{prefix}: {lines[0]}"
        else:
            text = f"{prefix}: {len(lines)} violations:\n" + "\n".join(f"- {x}" for x in lines)
        return f"{text}\n{footer}" if footer else text

    def warning_lines(self, *, prefix: str = "muster") -> list[str]:
        # A warning travels in an HTTP header: one line each.
        return [f"{prefix}: {finding.line(separator='; ')}" for finding in self.warnings]


def attributed(found: Iterable[Finding], policy: PolicyRef | None) -> list[Finding]:
    """``found``, with ``policy`` as the deciding policy of those that name none yet."""
    if policy is None:
        return list(found)
    return [
        finding if finding.policy is not None else dataclasses.replace(finding, policy=policy)
        for finding in found
    ]


def judge(findings: Iterable[Finding]) -> Verdict:
    """Split findings by mode into a verdict."""
    denials: list[Finding] = []
    warnings: list[Finding] = []
    for finding in findings:
        (denials if finding.mode is Mode.ENFORCE else warnings).append(finding)
    return Verdict(denials=tuple(denials), warnings=tuple(warnings))
