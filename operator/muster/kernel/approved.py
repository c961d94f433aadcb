"""What the registries of approved objects (Models, Datasets) share: which of their policies
select a namespace and which one decides, the pod annotation naming the objects a pod uses, and
why a name matches no approved object. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

from muster.kernel import denials, findings, selectors

__all__ = [
    "TERMINATED",
    "SelectingPolicy",
    "Usage",
    "deciding_policy",
    "decode_uses",
    "encode_uses",
    "named_policies_for",
    "not_registered",
    "pod_counts",
    "strictest_mode",
    "track_pod",
]


class SelectingPolicy(Protocol):
    """A ModelPolicy or DatasetPolicy spec, as far as choosing namespaces goes."""

    @property
    def namespace_selector(self) -> selectors.LabelSelector: ...

    @property
    def mode(self) -> findings.Mode: ...

    @property
    def denial(self) -> denials.DenialSpec | None: ...


PolicyT = TypeVar("PolicyT", bound=SelectingPolicy)


def named_policies_for(
    policies: Mapping[str, PolicyT], namespace_labels: Mapping[str, str]
) -> dict[str, PolicyT]:
    """The policies selecting a namespace with these labels, by name (in name order)."""
    return {
        name: spec
        for name, spec in sorted(policies.items())
        if selectors.matches(spec.namespace_selector, namespace_labels)
    }


def strictest_mode(policies: Iterable[SelectingPolicy]) -> findings.Mode:
    """Enforce when any of the policies enforces, else warn."""
    return (
        findings.Mode.ENFORCE
        if any(p.mode is findings.Mode.ENFORCE for p in policies)
        else findings.Mode.WARN
    )


def deciding_policy(
    kind: str, policies: Mapping[str, SelectingPolicy]
) -> findings.PolicyRef | None:
    """The policy a gate's findings are attributed to: of the policies selecting the
    namespace, the first by name in the strictest mode (None: no policy)."""
    if not policies:
        return None
    mode = strictest_mode(policies.values())
    for name, spec in sorted(policies.items()):
        if spec.mode is mode:
            return findings.PolicyRef(kind=kind, name=name, denial=spec.denial)
    return None


def encode_uses(pairs: Iterable[tuple[str, str]]) -> str:
    """The value of the pod annotation naming what it uses: JSON list of ``{name, digest}``,
    sorted, from ``(name, digest)`` pairs."""
    unique = set(pairs)
    return json.dumps([{"name": n, "digest": d} for n, d in sorted(unique)], separators=(",", ":"))


def decode_uses(value: object) -> list[tuple[str, str]]:
    """``(name, digest)`` pairs from a pod's annotation; anything malformed yields nothing."""
    if not isinstance(value, str):
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        return []
    pairs: list[tuple[str, str]] = []
    if isinstance(parsed, list):
        for item in parsed:
            if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                pairs.append((item["name"], str(item.get("digest", ""))))
    return pairs


# Pods in these phases run nothing: what they use no longer counts.
TERMINATED = frozenset({"Succeeded", "Failed"})
# Pod "namespace/name" -> the (name, digest) pairs its annotation says it uses, for pods that
# have not terminated.
Usage = dict[str, tuple[tuple[str, str], ...]]


def track_pod(usage: Usage, event_type: str, pod: Mapping[str, Any], annotation: str) -> set[str]:
    """Record a pod's watch event in ``usage`` (what it uses: its ``annotation``); returns the
    names whose count of pods using them may have changed."""
    metadata = _mapping(pod.get("metadata"))
    key = f"{metadata.get('namespace')}/{metadata.get('name')}"
    before = usage.get(key, ())
    if event_type == "DELETED" or _mapping(pod.get("status")).get("phase") in TERMINATED:
        usage.pop(key, None)
    else:
        usage[key] = tuple(decode_uses(_mapping(metadata.get("annotations")).get(annotation)))
    after = usage.get(key, ())
    return {name for name, _ in before} ^ {name for name, _ in after}


def pod_counts(usage: Usage) -> dict[str, int]:
    """Name -> how many pods use it."""
    counts: dict[str, int] = {}
    for pairs in usage.values():
        for name in {name for name, _ in pairs}:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _mapping(value: object) -> Mapping[str, Any]:
    # Bad input never crashes a handler: what is not an object reads as an empty one.
    return value if isinstance(value, Mapping) else {}


def not_registered(kind: str, name: str, invalid: Mapping[str, str]) -> str:
    """Why a volume naming the ``kind`` ``name`` matches nothing: not registered, or registered
    but not valid (``invalid``: the index's ``"Kind/name" -> why``)."""
    why = invalid.get(f"{kind}/{name}")
    if why is None:
        return (
            f"{kind} {name!r} is not registered; only approved {kind}s may be mounted here: "
            f"register it (muster {kind.lower()} register) or mount an approved one"
        )
    # Registered but not valid: say what is wrong rather than "not registered".
    return (
        f"{kind} {name!r} is invalid and approves nothing ({why}); "
        f"fix the {kind} (kubectl describe {kind.lower()} {name})"
    )
