"""Which namespaces Muster judges, and in which mode.

Two scopes (``muster run --enforcement-scope``, chart ``enforcement.scope``):

* ``namespaced`` (the default): a namespace opts in with ``muster.dev/enforce=true|enforce``
  (deny) or ``=warn`` (admit with a warning); without the label it is never judged.
* ``cluster``: every namespace is judged in enforce mode, no label needed; ``=warn`` still
  selects warn mode, and any other value (or none) means enforce, so no value switches it off.

In both, ``muster.dev/ignore=true``, the control plane's namespaces, Muster's own and the
listed exclusions are never judged.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping

from muster.kernel import findings, selectors

__all__ = [
    "ENFORCE_LABEL",
    "NAMESPACED",
    "NEVER_JUDGED",
    "OPT_OUT_LABEL",
    "Enforcement",
    "Scope",
    "in_reach",
    "mode_for_namespace",
    "watched_mode",
]

ENFORCE_LABEL = "muster.dev/enforce"
OPT_OUT_LABEL = "muster.dev/ignore"
NEVER_JUDGED = frozenset({"kube-system", "kube-public", "kube-node-lease"})

_LABEL_MODES = {
    "true": findings.Mode.ENFORCE,
    "enforce": findings.Mode.ENFORCE,
    "warn": findings.Mode.WARN,
}


class Scope(enum.StrEnum):
    """Which namespaces are judged without asking: only opted-in ones, or all of them."""

    NAMESPACED = "namespaced"
    CLUSTER = "cluster"


@dataclasses.dataclass(frozen=True, slots=True)
class Enforcement:
    """The scope of this installation and the namespaces it never judges besides the control
    plane's and its own (chart ``webhook.excludeNamespaces``, ``muster run
    --exclude-namespace``)."""

    scope: Scope = Scope.NAMESPACED
    excluded: frozenset[str] = frozenset()

    @classmethod
    def of(cls, scope: str | Scope, excluded: Iterable[str] = ()) -> Enforcement:
        """Raises ValueError for an unknown scope."""
        return cls(Scope(scope), frozenset(excluded))

    def never_judged(self, namespace: str | None, own_namespace: str | None) -> bool:
        return (
            not namespace
            or namespace in NEVER_JUDGED
            or namespace == own_namespace
            or namespace in self.excluded
        )

    def labelled_mode(self, labels: Mapping[str, str] | None) -> findings.Mode | None:
        """The mode the enforce label selects in this scope (the opt-out label aside)."""
        value = (labels or {}).get(ENFORCE_LABEL, "")
        if self.scope is Scope.CLUSTER:
            # Only an explicit warn lowers the mode: a missing or unknown value is enforce,
            # exactly as the webhooks' namespaceSelector (NotIn [warn], case-sensitive) does.
            return findings.Mode.WARN if value == "warn" else findings.Mode.ENFORCE
        return _LABEL_MODES.get(value.lower())


NAMESPACED = Enforcement()


def mode_for_namespace(
    namespace: str | None,
    labels: Mapping[str, str] | None,
    *,
    own_namespace: str | None,
    enforcement: Enforcement = NAMESPACED,
) -> findings.Mode | None:
    """The mode a namespace is judged in, or None when Muster must leave it alone.

    The webhook configuration's namespaceSelector already filters; this is the same rule
    applied again inside the handler so a misconfigured webhook cannot block the system.
    """
    if enforcement.never_judged(namespace, own_namespace):
        return None
    if (labels or {}).get(OPT_OUT_LABEL) == "true":
        return None
    return enforcement.labelled_mode(labels)


def in_reach(
    namespace: str | None,
    labels: Mapping[str, str] | None,
    *,
    own_namespace: str | None,
    selector: selectors.LabelSelector | None = None,
    enforcement: Enforcement = NAMESPACED,
) -> bool:
    """Whether this installation reports on existing objects in a namespace (revocations):
    never the control plane's, Muster's own or the excluded ones; with a ``selector``
    (``muster run --namespace-selector``, for webhooks that select namespaces otherwise) those
    matching it, else those not opted out. Installations with disjoint namespaces never report
    twice."""
    if enforcement.never_judged(namespace, own_namespace):
        return False
    labels = labels or {}
    if selector is not None:
        return selectors.matches(selector, labels)
    return labels.get(OPT_OUT_LABEL) != "true"


def watched_mode(
    namespace: str | None,
    labels: Mapping[str, str] | None,
    *,
    own_namespace: str | None,
    selector: selectors.LabelSelector | None = None,
    enforcement: Enforcement = NAMESPACED,
) -> findings.Mode | None:
    """The mode of a namespace whose running pods the controllers re-judge (drift): in reach
    (:func:`in_reach`) and judged in this scope (opted in with the enforce label, or any
    namespace in cluster scope), as the webhooks select it."""
    if not in_reach(
        namespace, labels, own_namespace=own_namespace, selector=selector, enforcement=enforcement
    ):
        return None
    return enforcement.labelled_mode(labels)
