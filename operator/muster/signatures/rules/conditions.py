"""Conditions over attestations, written in CEL, and the decision about an artifact's attestations.

An ``ImagePolicy`` attestation (or a ``Model``'s provenance requirement) names a predicate type,
the authorities that must have signed it and conditions over the statement, in the Common
Expression Language that Kubernetes and Kyverno users already write. Each condition sees
``predicate`` (the statement's predicate), ``statement`` (the whole in-toto statement) and
``now`` (a timestamp), and must be true.

CEL is evaluated by ``common-expression-language`` (the Python binding of the Rust ``cel``
interpreter), not by a home-made evaluator. ``cel-python`` was measured first and set aside: its
tree-walking interpreter took 35 ms for ``components.exists(...)`` over 200 SBOM components
(0.14 ms here), and SBOMs of thousands of components are common. Expressions are compiled once
when the policy is, so a policy with a syntax error never compiles.

A denial names the attestation, the condition and the values the condition read: each path
into ``predicate`` or ``statement`` the expression names is evaluated again, alone, with CEL.

Everything here is pure: the statements arrive verified
(:mod:`muster.signatures.rules.attestations`) and ``now`` is the caller's.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from muster.signatures.rules import attestations, authorities, proofs

if TYPE_CHECKING:
    import cel  # imported where a condition is compiled: ``cel`` loads an interactive shell

__all__ = [
    "VARIABLES",
    "Condition",
    "InvalidCondition",
    "Requirement",
    "Verdict",
    "compile_condition",
    "judge",
    "unmet",
]

VARIABLES = frozenset({"predicate", "statement", "now"})
MAX_VALUE_CHARS = 120  # of a value quoted in a denial
MAX_PATHS_SHOWN = 3
# A path into the statement the expression reads: predicate.runDetails.builder.id, also with
# literal indexes (predicate.materials[0].uri), not a method called on it; each is shown with
# its value on a denial.
_PATH = re.compile(
    r"(?<![\w.\"'])(?:predicate|statement)(?:\.[A-Za-z_]\w*(?![\w(])|\[\d+\]|\[\"[^\"\\]*\"\])+"
)

_BOUND = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")

MISSING = "AttestationMissing"
CONDITION_FAILED = "AttestationConditionFailed"


class InvalidCondition(ValueError):
    """A condition that does not compile, or reads a variable that does not exist."""


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """One compiled CEL condition; ``paths`` are the statement paths shown when it fails."""

    name: str
    expression: str
    message: str | None
    program: cel.Program = dataclasses.field(compare=False, repr=False)
    paths: tuple[tuple[str, cel.Program], ...] = dataclasses.field(compare=False, repr=False)


def compile_condition(name: str, expression: str, message: str | None = None) -> Condition:
    """Compile ``expression`` once; :class:`InvalidCondition` says why it cannot be used."""
    import cel  # only policies with conditions pay for it (command start-up)

    try:
        program = cel.compile(expression)
    except (ValueError, RuntimeError, TypeError) as error:
        raise InvalidCondition(f"condition {name!r} does not compile: {error}") from None
    # The variables the library reports include those the macros bind (``c`` in
    # ``components.exists(c, ...)``): those are the expression's own.
    bound = set(_BOUND.findall(expression))
    unknown = sorted(set(program.variables()) - VARIABLES - bound)
    if unknown:
        raise InvalidCondition(
            f"condition {name!r} reads {', '.join(unknown)}; a condition may read "
            f"{', '.join(sorted(VARIABLES))}"
        )
    paths = []
    for path in dict.fromkeys(_PATH.findall(expression)):
        try:
            paths.append((path, cel.compile(path)))
        except (ValueError, RuntimeError, TypeError):
            continue  # only an aid to the message
    return Condition(name, expression, message, program, tuple(paths[:MAX_PATHS_SHOWN]))


@dataclasses.dataclass(frozen=True, slots=True)
class Requirement:
    """An attestation a policy requires: its predicate type, signers and conditions."""

    name: str
    predicate_type: str
    authorities: tuple[authorities.Authority, ...]
    conditions: tuple[Condition, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an image carries every required attestation; ``reason`` and ``message`` when
    it does not, and which attestations were verified (by whom) when it does."""

    passed: bool
    reason: str = ""
    message: str = ""
    verified: tuple[str, ...] = ()


def _shown(value: object) -> str:
    try:
        text = json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


class EvaluationError(Exception):
    """A CEL expression that could not be evaluated, whatever the binding raised."""


def _evaluate(program: cel.Program, context: cel.Context) -> object:
    # CEL errors (a missing field, a type mismatch, a division by zero) surface as Python
    # exceptions of several kinds; each makes the condition fail, never pass. A panic in the
    # Rust interpreter arrives as pyo3's PanicException, a BaseException: it fails the
    # condition too, rather than the admission.
    try:
        return program.execute(context)
    except Exception as error:
        raise EvaluationError(_first_line(error)) from None
    except BaseException as error:
        if type(error).__name__ != "PanicException":
            raise
        raise EvaluationError(f"the CEL interpreter failed: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _failure(condition: Condition, context: cel.Context) -> str | None:
    """Why ``condition`` does not hold for this statement, or None when it holds."""
    try:
        result = _evaluate(condition.program, context)
    except EvaluationError as error:
        outcome = f"could not be evaluated: {error}"
    else:
        if result is True:
            return None
        outcome = "is false" if result is False else f"gave {_shown(result)}, not a boolean"
    values = []
    for path, program in condition.paths:
        try:
            values.append(f"{path} = {_shown(_evaluate(program, context))}")
        except EvaluationError:
            values.append(f"{path} is absent")
    said = f" ({condition.message})" if condition.message else ""
    where = f"; {', '.join(values)}" if values else ""
    return f"condition {condition.name!r}{said} {outcome}: {condition.expression}{where}"


def _context(statement: attestations.Statement, now: datetime.datetime) -> cel.Context:
    import cel  # as in compile_condition

    return cel.Context(
        {"predicate": statement.predicate, "statement": dict(statement.document), "now": now}
    )


def unmet(
    conditions: Sequence[Condition], statement: attestations.Statement, now: datetime.datetime
) -> list[str]:
    """Why each of ``conditions`` does not hold for a verified ``statement`` (empty: all hold)."""
    try:
        context = _context(statement, now)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        return [f"its statement cannot be given to CEL: {_first_line(error)}"]
    return [
        failure for condition in conditions if (failure := _failure(condition, context)) is not None
    ]


def judge_one(
    requirement: Requirement,
    found: Sequence[attestations.Item],
    *,
    digest: str,
    now: datetime.datetime,
) -> Verdict:
    """Does one of ``found`` carry a statement of the required type, signed by one of the
    requirement's authorities, about ``digest``, for which every condition holds?"""
    what = f"attestation {requirement.name!r} ({requirement.predicate_type})"
    candidates = [
        (position, item)
        for position, item in enumerate(found)
        if item.predicate_type in (None, requirement.predicate_type)
    ]
    reasons: list[str] = []
    failures: list[str] = []
    for position, item in candidates:
        for authority in requirement.authorities:
            try:
                attested = attestations.verify(item, digest=digest, authority=authority)
            except proofs.Inapplicable:
                continue
            except proofs.Rejected as error:
                reasons.append(f"{attestations.label(item, position)}: {authority.name}: {error}")
                continue
            if attested.statement.predicate_type != requirement.predicate_type:
                continue  # another kind of attestation by the same signer
            try:
                context = _context(attested.statement, now)
            except (ValueError, TypeError, OverflowError, RecursionError) as error:
                failures.append(f"its statement cannot be given to CEL: {_first_line(error)}")
                break
            failed = [
                failure
                for condition in requirement.conditions
                if (failure := _failure(condition, context)) is not None
            ]
            if not failed:
                return Verdict(True, verified=(f"{requirement.name} by {attested.proof.signer}",))
            failures.append(f"{'; '.join(failed)} (signed by {attested.proof.signer})")
            break  # one signer's verified statement is enough to judge this one
    if failures:
        return Verdict(False, CONDITION_FAILED, f"{what}: {failures[0]}")
    signers = ", ".join(authorities.describe(a) for a in requirement.authorities[:3])
    if not found:
        detail = "the image carries no attestation"
    elif not candidates:
        kinds = sorted({item.predicate_type or "?" for item in found})
        detail = f"the image's attestations are of other predicate types ({', '.join(kinds)})"
    else:
        detail = "; ".join(reasons[:4]) or "no attestation of that predicate type"
    return Verdict(
        False,
        MISSING,
        f"{what} signed by {signers} not found: {detail}; attach one with cosign attest "
        f"--type {requirement.predicate_type}",
    )


def judge(
    requirements: Sequence[Requirement],
    found: Sequence[attestations.Item],
    *,
    digest: str,
    now: datetime.datetime,
) -> Verdict:
    """Every requirement must hold; the first that does not is the verdict."""
    verified: list[str] = []
    for requirement in requirements:
        verdict = judge_one(requirement, found, digest=digest, now=now)
        if not verdict.passed:
            return verdict
        verified.extend(verdict.verified)
    return Verdict(True, verified=tuple(verified))


def describe(requirements: Sequence[Requirement]) -> list[dict[str, Any]]:
    """A summary for logs and the CLI."""
    return [
        {
            "name": requirement.name,
            "predicateType": requirement.predicate_type,
            "authorities": [authority.name for authority in requirement.authorities],
            "conditions": [condition.name for condition in requirement.conditions],
        }
        for requirement in requirements
    ]
