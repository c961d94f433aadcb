"""Which namespaces Muster judges: opted-in ones, never the control plane's or its own."""

from __future__ import annotations

from collections.abc import Mapping

from muster.core import findings

__all__ = ["ENFORCE_LABEL", "NEVER_JUDGED", "OPT_OUT_LABEL", "mode_for_namespace"]

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
