"""Findings and verdicts: what every gate returns, and how a verdict reads to a person."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

__all__ = ["Finding", "Mode", "Verdict", "judge"]


class Mode(enum.StrEnum):
    """What a violation does: ``enforce`` denies, ``warn`` admits with a warning."""

    ENFORCE = "enforce"
    WARN = "warn"


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One violation of one rule by one part of a workload.

    ``reason`` is a stable CamelCase identifier (used for Events and metrics);
    ``message`` is the one line a person reads.
    """

    check: str
    reason: str
    subject: str
    message: str
    mode: Mode = Mode.ENFORCE

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of judging one object: denials block it, warnings travel with it."""

    denials: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.denials

    def message(self, *, prefix: str = "muster") -> str:
        """One line per denial, the way the apiserver shows it to ``kubectl`` users."""
        lines = [str(finding) for finding in self.denials]
        if len(lines) == 1:
            return f"{prefix}: {lines[0]}"
        return f"{prefix}: {len(lines)} violations:\n" + "\n".join(f"- {line}" for line in lines)

    def warning_lines(self, *, prefix: str = "muster") -> list[str]:
        return [f"{prefix}: {finding}" for finding in self.warnings]


def judge(findings: Iterable[Finding]) -> Verdict:
    """Split findings by mode into a verdict."""
    denials: list[Finding] = []
    warnings: list[Finding] = []
    for finding in findings:
        (denials if finding.mode is Mode.ENFORCE else warnings).append(finding)
    return Verdict(denials=tuple(denials), warnings=tuple(warnings))
