"""Break-glass exemptions: a reasoned, authorised, audited way past the gates.

A request carries the annotation ``muster.dev/exemption: "<reason>"`` on the object (a Pod or a
workload) or on any of its pod templates. It is honoured only when

- the reason is not empty (after trimming), and
- the requesting user (AdmissionReview ``userInfo``) is in one of the exemption groups the
  operator was started with (``muster run --exemption-group G``; none by default, so by default
  no exemption is ever honoured).

An honoured exemption turns every enforce denial of the gates into a warning and adds one
warning naming the user and the reason; the caller must audit it (an ``ExemptionUsed`` Event and
the ``muster_exemptions_used`` metric). A claimed exemption that is not honoured is itself a
denial — never silently ignored, so the user learns why — and it cannot be waived.

A template's annotation is checked against the user who sends the workload, so a user outside
the groups cannot plant an exemption for the pods a controller will later create. Those pods are
sent by the controller's service account: they are exempted only if that account's group is an
exemption group (see docs/security.md for the trade-off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from muster.kernel import findings, gates, subjects

__all__ = [
    "ANNOTATION",
    "CHECK",
    "MAX_REASON_LENGTH",
    "Decision",
    "Exemption",
    "claims",
    "decide",
    "hint",
    "user_groups",
    "user_name",
    "without_used",
]

ANNOTATION = "muster.dev/exemption"
CHECK = "exemption"
MAX_REASON_LENGTH = 512


@dataclasses.dataclass(frozen=True, slots=True)
class Exemption:
    """An honoured exemption: who, why, and which checks' denials it waived."""

    user: str
    groups: tuple[str, ...]
    reason: str
    waived: tuple[findings.Finding, ...]

    @property
    def waived_checks(self) -> tuple[str, ...]:
        return tuple(sorted({finding.check for finding in self.waived}))


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The gates' results after the exemption rule, and the exemption to audit (if honoured)."""

    results: tuple[gates.GateResult, ...]
    exemption: Exemption | None = None


def user_name(user: Mapping[str, Any]) -> str:
    name = user.get("username")
    return name if isinstance(name, str) and name else "<unknown user>"


def user_groups(user: Mapping[str, Any]) -> tuple[str, ...]:
    groups = user.get("groups")
    if not isinstance(groups, list):
        return ()
    return tuple(group for group in groups if isinstance(group, str))


def claims(subject: subjects.Subject) -> list[tuple[str, object]]:
    """Every place the annotation appears: (where, its raw value)."""
    found: list[tuple[str, object]] = []
    metadata = subject.object.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if isinstance(annotations, Mapping) and ANNOTATION in annotations:
        found.append((subject.kind or "object", annotations[ANNOTATION]))
    for template in subject.templates:
        if template.pointer in ("", "/spec"):
            continue  # a Pod is its own template: its annotations were read above
        if ANNOTATION in template.annotations:
            found.append((f"pod template {template.pointer}", template.annotations[ANNOTATION]))
    return found


def _finding(reason: str, message: str) -> findings.Finding:
    return findings.Finding(
        check=CHECK,
        reason=reason,
        subject=f"annotation {ANNOTATION}",
        message=message,
        mode=findings.Mode.ENFORCE,
    )


def _problems(
    found: Sequence[tuple[str, object]], user: Mapping[str, Any], allowed: frozenset[str]
) -> list[findings.Finding]:
    problems: list[findings.Finding] = []
    for where, value in found:
        if not isinstance(value, str) or not value.strip():
            problems.append(
                _finding(
                    "ExemptionInvalid",
                    f"on the {where} gives no reason; an exemption needs a non-empty reason "
                    f'(e.g. {ANNOTATION}: "incident 1234: registry down")',
                )
            )
        elif len(value) > MAX_REASON_LENGTH:
            problems.append(
                _finding(
                    "ExemptionInvalid",
                    f"on the {where} is longer than {MAX_REASON_LENGTH} characters",
                )
            )
    name = user_name(user)
    if not allowed:
        problems.append(
            _finding(
                "ExemptionNotAllowed",
                f"{name} asked for an exemption, but exemptions are turned off on this "
                "cluster (muster run has no --exemption-group); remove the annotation",
            )
        )
    elif not allowed.intersection(user_groups(user)):
        problems.append(
            _finding(
                "ExemptionNotAllowed",
                f"{name} is not in an exemption group ({', '.join(sorted(allowed))}); "
                "remove the annotation or ask someone who is",
            )
        )
    return problems


def _waive(result: gates.GateResult) -> tuple[gates.GateResult, list[findings.Finding]]:
    waived = [f for f in result.findings if f.mode is findings.Mode.ENFORCE]
    if not waived:
        return result, []
    softened = tuple(dataclasses.replace(f, mode=findings.Mode.WARN) for f in result.findings)
    return dataclasses.replace(result, findings=softened), waived


def decide(
    subject: subjects.Subject,
    results: Iterable[gates.GateResult],
    allowed_groups: frozenset[str],
    phase: gates.Phase = gates.Phase.VALIDATE,
) -> Decision:
    """Apply the exemption rule to the gates' results.

    Mutation passes unchanged (it never denies), and so does a request without a claim. An
    invalid or unauthorised claim adds a denial. An honoured claim turns every enforce finding
    into a warning and returns the exemption for auditing.
    """
    results = tuple(results)
    found = claims(subject) if phase is gates.Phase.VALIDATE else []
    if not found:
        return Decision(results)
    problems = _problems(found, subject.user, allowed_groups)
    if problems:
        return Decision((*results, gates.GateResult(findings=tuple(problems))))
    waived: list[findings.Finding] = []
    softened: list[gates.GateResult] = []
    for result in results:
        changed, gone = _waive(result)
        softened.append(changed)
        waived.extend(gone)
    reason = "; ".join(sorted({str(value).strip() for _, value in found}))
    exemption = Exemption(
        user=user_name(subject.user),
        groups=tuple(sorted(allowed_groups.intersection(user_groups(subject.user)))),
        reason=reason,
        waived=tuple(waived),
    )
    notice = findings.Finding(
        check=CHECK,
        reason="ExemptionUsed",
        subject=f"annotation {ANNOTATION}",
        message=(
            f"exemption used by {exemption.user} ({reason}); "
            + (
                f"{len(waived)} denial(s) waived: " + ", ".join(exemption.waived_checks)
                if waived
                else "nothing needed waiving"
            )
            + "; this is audited"
        ),
        mode=findings.Mode.WARN,
    )
    softened.append(gates.GateResult(findings=(notice,)))
    return Decision(tuple(softened), exemption)


def hint(allowed_groups: frozenset[str]) -> str:
    """The line a denial ends with where exemptions exist: who may grant one, and how. Empty
    when there are no exemption groups (then nobody can, and saying so would only mislead)."""
    if not allowed_groups:
        return ""
    groups = ", ".join(sorted(allowed_groups)[:3]) + (", ..." if len(allowed_groups) > 3 else "")
    return (
        f"In an emergency a member of {groups} may exempt it: annotation "
        f'{ANNOTATION}: "<why>" (audited)'
    )


def without_used(verdict: findings.Verdict) -> findings.Verdict:
    """The verdict without the ``ExemptionUsed`` warning: observers report the rest, the
    exemption auditor reports that one (so it is audited exactly once, never dropped)."""
    return dataclasses.replace(
        verdict,
        warnings=tuple(
            f for f in verdict.warnings if not (f.check == CHECK and f.reason == "ExemptionUsed")
        ),
    )
