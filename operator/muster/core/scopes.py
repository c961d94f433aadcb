"""Which namespaces Muster judges: opted-in ones, never the control plane's or its own."""

from __future__ import annotations

from collections.abc import Mapping

from muster.core import findings, selectors

__all__ = [
    "ENFORCE_LABEL",
    "NEVER_JUDGED",
    "OPT_OUT_LABEL",
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


def mode_for_namespace(
    namespace: str | None, labels: Mapping[str, str] | None, *, own_namespace: str | None
) -> findings.Mode | None:
    """The mode a namespace opted into, or None when Muster must leave it alone.

    The webhook configuration's namespaceSelector already filters; this is the same rule
    applied again inside the handler so a misconfigured webhook cannot block the system.
    """
    if not namespace or namespace in NEVER_JUDGED or namespace == own_namespace:
        return None
    labels = labels or {}
    if labels.get(OPT_OUT_LABEL) == "true":
        return None
    return _LABEL_MODES.get(labels.get(ENFORCE_LABEL, "").lower())


def in_reach(
    namespace: str | None,
    labels: Mapping[str, str] | None,
    *,
    own_namespace: str | None,
    selector: selectors.LabelSelector | None = None,
) -> bool:
    """Whether this installation reports on existing objects in a namespace (revocations):
    never the control plane's or Muster's own; with a ``selector`` (``muster run
    --namespace-selector``, for webhooks that select namespaces otherwise) those matching it,
    else those not opted out. Installations with disjoint namespaces never report twice."""
    if not namespace or namespace in NEVER_JUDGED or namespace == own_namespace:
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
) -> findings.Mode | None:
    """The mode of a namespace whose running pods the controllers re-judge (drift): in reach
    (:func:`in_reach`) and opted in with the enforce label, as the webhooks select it."""
    if not in_reach(namespace, labels, own_namespace=own_namespace, selector=selector):
        return None
    return _LABEL_MODES.get((labels or {}).get(ENFORCE_LABEL, "").lower())
