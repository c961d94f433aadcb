"""Licences in the AI-BOM: the SPDX expression CycloneDX expects, and what the licence rules of
the policies selecting the workload's namespace decide about it.

The decision is computed with :func:`muster.kernel.licences.judge`, the function the gates use,
so the BOM says what admission would say: ``allowed``, ``refused`` (with each refusing policy's
rule) or ``unjudged`` when no policy of that kind selects the namespace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from muster.kernel import licences

__all__ = [
    "DECISION",
    "LicenceRules",
    "decision_properties",
    "licence_choice",
]

DECISION = "muster:licence:decision"


@dataclasses.dataclass(frozen=True)
class LicenceRules:
    """The licence rules of the policies selecting a pod's namespace, as (policy name, rules):
    DatasetPolicies' ``licenses`` judge datasets, ModelPolicies' judge Models."""

    datasets: tuple[tuple[str, licences.LicencePolicy], ...] = ()
    models: tuple[tuple[str, licences.LicencePolicy], ...] = ()
    # Policies that could not be read (their Compiled status says why): the gate keeps their
    # last good version, which the record cannot know, so it names them.
    unreadable_datasets: tuple[str, ...] = ()
    unreadable_models: tuple[str, ...] = ()


def licence_choice(expression: str | None) -> list[dict[str, object]] | None:
    """CycloneDX ``licenses``: one SPDX expression, normalised; text that is no SPDX expression
    (a model's own licence, e.g. ``llama3.1``, where no LicenseRef was written) stays a named
    licence as written, so nothing declared is lost."""
    if not expression:
        return None
    try:
        return [{"expression": licences.validate(expression)}]
    except licences.LicenceError:
        return [{"license": {"name": expression}}]


def decision_properties(
    expression: str | None,
    policies: Sequence[tuple[str, licences.LicencePolicy]],
    unreadable: Sequence[str] = (),
) -> list[dict[str, str]]:
    """``muster:licence:decision`` and, per policy judged, ``muster:licence:policy``; per
    refusal ``muster:licence:rule`` (``<policy>: <rule>``) and ``muster:licence:refused`` (the
    licence refused); ``muster:licence:policy-unreadable`` per policy that could not be read."""
    unread = [{"name": "muster:licence:policy-unreadable", "value": name} for name in unreadable]
    if not policies:
        return [{"name": DECISION, "value": "unjudged"}, *unread]
    refusals: list[tuple[str, licences.LicenceVerdict]] = []
    for name, policy in policies:
        try:
            verdict = licences.judge(expression, policy)
        except licences.LicenceError as error:
            # An expression the gate cannot read is one it refuses: so does the record.
            verdict = licences.LicenceVerdict(
                licence=expression or "", rule="malformed expression", message=str(error)
            )
        if verdict is not None:
            refusals.append((name, verdict))
    properties = [{"name": DECISION, "value": "refused" if refusals else "allowed"}]
    properties += [{"name": "muster:licence:policy", "value": name} for name, _ in policies]
    for name, verdict in refusals:
        properties.append({"name": "muster:licence:rule", "value": f"{name}: {verdict.rule}"})
        properties.append({"name": "muster:licence:refused", "value": verdict.licence})
    return properties + unread
