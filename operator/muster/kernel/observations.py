"""What Muster tells SREs about its decisions, decided purely: Event reasons, targets and series.

Events and metrics are written by ``muster.platform.events`` and ``muster.platform.metrics``;
this module holds the parts that need no I/O so they are testable in microseconds:

* the stable Event reasons (a finding's ``reason`` becomes the Event reason),
* which object an admission decision is reported on (:func:`plan`),
* how repeated identical findings fold into one Event series (:class:`SeriesBook`),
* how label values are kept to a bounded set (:class:`BoundedLabel`).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from muster.kernel import findings, gates, subjects

__all__ = [
    "OTHER",
    "PASSED_UNSIGNED",
    "PIPELINE_REASONS",
    "BoundedLabel",
    "Delivery",
    "EventType",
    "Notice",
    "ObjectRef",
    "SeriesBook",
    "SeriesKey",
    "SeriesState",
    "Write",
    "controller_owner",
    "namespace_ref",
    "notices",
    "policy_ref",
    "revocation_notice",
    "series_key",
    "some_of",
    "truncate_note",
]

OTHER = "other"  # the label value every value past a bound is folded into

# An image admitted without a signature because an ImagePolicy says so: not a violation, but
# never silent (counted apart from violations, never drift).
PASSED_UNSIGNED = "ImagePassedUnsigned"

# The reasons the pipeline itself reports, and what they mean; each area declares its own
# (``Area.reasons``). Together they are exactly the reasons the code emits: a unit test
# (tests/unit/observability/test_reasons.py) reads the source and fails on any difference, and
# another checks that docs/observability.md describes them all.
PIPELINE_REASONS: Mapping[str, str] = {
    # exemptions
    "ExemptionUsed": "an exemption let a request through that a rule would have stopped",
    "ExemptionInvalid": "an exemption annotation gives no usable reason",
    "ExemptionNotAllowed": "an exemption was asked for by a user outside the exemption groups",
    # the pipeline
    "DeadlineExceeded": "a gate gave no answer within the admission deadline",
    "InternalError": "a gate failed; see the operator logs",
    # every gate that reads namespace labels
    "NamespaceUnavailable": "the namespace's labels could not be read to select policies",
}

NOTE_LIMIT = 1024  # events.k8s.io/v1 rejects notes longer than 1 kB


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class Delivery(enum.StrEnum):
    """How an Event finds its object."""

    NOW = "now"  # the object exists (an owner, the namespace, an updated object)
    WHEN_CREATED = "when-created"  # the object is being admitted: post once it exists


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object an Event is about (``regarding``); ``uid`` is filled in once known."""

    api_version: str
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""

    def body(self) -> dict[str, str]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        return ref

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return (self.api_version, self.kind, self.namespace, self.name)


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """One Event to report: about ``target``, with a stable ``reason`` and a readable ``note``.

    ``fallback`` is where it goes when ``target`` never appears (an admitted object whose
    creation failed later), and ``namespace`` is the namespace the decision was made in.
    """

    target: ObjectRef
    delivery: Delivery
    type: EventType
    reason: str
    action: str
    note: str
    namespace: str
    fallback: ObjectRef | None = None


def namespace_ref(name: str) -> ObjectRef:
    """A Namespace, with ``namespace`` set to itself: the Event lives in that namespace (the
    Events API wants an Event about a cluster-scoped object in ``default`` otherwise), so
    ``kubectl get events -n <namespace>`` shows its users why a request was denied."""
    return ObjectRef(api_version="v1", kind="Namespace", name=name, namespace=name)


def policy_ref(policy: findings.PolicyRef) -> ObjectRef:
    """The policy object a finding names, as an Event's object. Muster's policies are
    cluster-scoped: their Events live in ``default``, as the Events API asks."""
    return ObjectRef(
        api_version=policy.api_version,
        kind=policy.kind,
        name=policy.name,
        namespace=policy.namespace,
    )


def controller_owner(metadata: Mapping[str, Any], namespace: str) -> ObjectRef | None:
    """The controlling owner named in ``metadata.ownerReferences`` (else the first owner)."""
    raw = metadata.get("ownerReferences")
    if not isinstance(raw, list):
        return None
    owners = [owner for owner in raw if isinstance(owner, Mapping)]
    owners.sort(key=lambda owner: owner.get("controller") is not True)
    for owner in owners:
        api_version, kind, name = owner.get("apiVersion"), owner.get("kind"), owner.get("name")
        if all(isinstance(value, str) and value for value in (api_version, kind, name)):
            return ObjectRef(
                api_version=str(api_version),
                kind=str(kind),
                name=str(name),
                namespace=namespace,
                uid=str(owner.get("uid") or ""),
            )
    return None


def truncate_note(note: str, limit: int = NOTE_LIMIT) -> str:
    encoded = note.encode()
    if len(encoded) <= limit:
        return note
    return encoded[: limit - 3].decode(errors="ignore") + "..."


def revocation_notice(target: ObjectRef, reason: str, note: str) -> Notice:
    """A Warning Event, sent now, that what ``target`` is or uses was revoked; one about a
    cluster-scoped object (a Model, a Dataset) lives in ``default``."""
    return Notice(
        target=target,
        delivery=Delivery.NOW,
        type=EventType.WARNING,
        reason=reason,
        action="Revoke",
        note=truncate_note(note),
        namespace=target.namespace or "default",
    )


def some_of(names: Sequence[str], limit: int = 20) -> str:
    """The first ``limit`` of ``names``, comma-separated, with `` ...`` when there are more."""
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def _self_ref(subject: subjects.Subject) -> ObjectRef | None:
    if not subject.name:
        return None
    api_version = subject.object.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        api_version = f"{subject.group}/v1" if subject.group else "v1"
    uid = ""
    metadata = subject.object.get("metadata")
    if isinstance(metadata, Mapping):
        uid = str(metadata.get("uid") or "")
    return ObjectRef(
        api_version=api_version,
        kind=subject.kind,
        name=subject.name,
        namespace=subject.namespace,
        uid=uid,
    )


def _lines(found: Iterable[findings.Finding]) -> str:
    return "; ".join(str(finding) for finding in found)


def notices(
    subject: subjects.Subject, phase: gates.Phase, verdict: findings.Verdict
) -> list[Notice]:
    """The Events one decision produces; none for clean requests or the mutation phase.

    One Event per finding reason (so an Event series counts one kind of problem) on:

    * an UPDATE: the object itself (it exists);
    * a denied CREATE of a Pod: its owner (``ownerReferences``: ReplicaSet, Job, training job;
      the adapter climbs from a ReplicaSet to its Deployment);
    * a denied CREATE with no owner (a bare Pod, a workload: there is no object yet): each
      policy object the findings name (for the platform team; one Event per policy and reason,
      with only that policy's findings) and the Namespace (for the namespace's users, who may
      not read cluster-scoped policies' Events); the Namespace alone when no finding names one;
    * an admitted CREATE with warnings: the object once it exists, else its owner or Namespace.
    """
    if phase is not gates.Phase.VALIDATE or subject.dry_run:
        return []
    denied = bool(verdict.denials)
    reported = verdict.denials if denied else verdict.warnings
    if not reported:
        return []
    metadata = subject.object.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    owner = controller_owner(metadata, subject.namespace) if subject.is_pod else None
    elsewhere = owner or namespace_ref(subject.namespace)
    itself = _self_ref(subject)
    delivery = Delivery.NOW
    if subject.operation == "UPDATE" and itself is not None:
        target = itself
    elif denied or itself is None:
        target = elsewhere
    else:
        target, delivery = itself, Delivery.WHEN_CREATED
    by_reason: dict[str, list[findings.Finding]] = collections.defaultdict(list)
    for finding in reported:
        by_reason[finding.reason].append(finding)
    action = "Denied" if denied else "Warned"
    about = "" if target == itself else f"{subject.display}: "
    planned = [
        Notice(
            target=target,
            delivery=delivery,
            type=EventType.WARNING,
            reason=reason,
            action=action,
            note=truncate_note(f"{about}{action.lower()} by muster: {_lines(found)}"),
            namespace=subject.namespace,
            fallback=elsewhere if delivery is Delivery.WHEN_CREATED else None,
        )
        for reason, found in sorted(by_reason.items())
    ]
    if target is elsewhere and owner is None and denied:
        planned.extend(_policy_notices(subject, by_reason, action))
    return planned


def _policy_notices(
    subject: subjects.Subject,
    by_reason: Mapping[str, Iterable[findings.Finding]],
    action: str,
) -> list[Notice]:
    """One notice per policy object and reason, on the policy, with that policy's findings."""
    planned: list[Notice] = []
    for reason, found in sorted(by_reason.items()):
        by_policy: dict[findings.PolicyRef, list[findings.Finding]] = {}
        for finding in found:
            if finding.policy is not None:
                by_policy.setdefault(finding.policy, []).append(finding)
        for policy, decided in sorted(by_policy.items(), key=lambda item: str(item[0])):
            planned.append(
                Notice(
                    target=policy_ref(policy),
                    delivery=Delivery.NOW,
                    type=EventType.WARNING,
                    reason=reason,
                    action=action,
                    note=truncate_note(
                        f"{subject.display}: {action.lower()} by muster: {_lines(decided)}"
                    ),
                    # Not the subject's namespace: a cluster-scoped object's Events live in
                    # "default", and a policy that is gone is no reason to post elsewhere.
                    namespace=policy.namespace,
                )
            )
    return planned


# -- Event series ---------------------------------------------------------------------------

SeriesKey = tuple[tuple[str, str, str, str], str, str, str]


def series_key(notice: Notice, target: ObjectRef) -> SeriesKey:
    """Identical findings on the same object share a series: same reason, action and note."""
    return (target.identity, notice.reason, notice.action, notice.note)


@dataclasses.dataclass(slots=True)
class SeriesState:
    name: str | None = None  # the Event object, once created
    count: int = 0  # occurrences observed
    written: int = 0  # occurrences the Event object shows
    first: float = 0.0
    last: float = 0.0
    last_write: float = float("-inf")


@dataclasses.dataclass(frozen=True, slots=True)
class Write:
    """What to send: create a new Event, or update an existing one's series."""

    create: bool
    name: str | None
    count: int
    first: float
    last: float


class SeriesBook:
    """Folds repeated identical Events into one series, bounded in memory and in write rate.

    A series lives ``window`` seconds after its last occurrence (then the next one starts a new
    Event); each series is written at most once per ``min_interval`` seconds, later occurrences
    are counted and flushed by the next write; at most ``max_series`` are remembered (least
    recently seen forgotten first).
    """

    def __init__(
        self, *, window: float = 600.0, min_interval: float = 1.0, max_series: int = 4096
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.window = window
        self.min_interval = min_interval
        self.max_series = max_series
        self._series: collections.OrderedDict[SeriesKey, SeriesState] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, key: SeriesKey, now: float) -> None:
        state = self._series.get(key)
        if state is None or now - state.last > self.window:
            state = SeriesState(first=now)
            self._series[key] = state
            while len(self._series) > self.max_series:
                self._series.popitem(last=False)
        self._series.move_to_end(key)
        state.count += 1
        state.last = now

    def due(self, key: SeriesKey, now: float) -> Write | float | None:
        """The write to make now, None if nothing is pending, or when to try again."""
        state = self._series.get(key)
        if state is None or state.count == state.written:
            return None
        wait = state.last_write + self.min_interval - now
        if wait > 0:
            return wait
        return Write(
            create=state.name is None,
            name=state.name,
            count=state.count,
            first=state.first,
            last=state.last,
        )

    def written(self, key: SeriesKey, write: Write, name: str, now: float) -> None:
        state = self._series.get(key)
        if state is None:
            return
        state.name = name
        state.written = max(state.written, write.count)
        state.last_write = now

    def forget(self, key: SeriesKey) -> None:
        """The Event is gone (deleted or expired): the next occurrence starts a new one."""
        state = self._series.get(key)
        if state is not None:
            state.name = None
            state.written = 0
            state.count = 1
            state.first = state.last


# -- label cardinality ----------------------------------------------------------------------


class BoundedLabel:
    """Keeps a label's values to a bounded set.

    With ``allowed`` the values are exactly those (anything else is ``other``); without, the
    first ``limit`` distinct values seen are kept, later new values become ``other``. Values
    longer than 63 characters (no Kubernetes name is) also become ``other``.
    """

    def __init__(self, *, limit: int = 100, allowed: Iterable[str] | None = None) -> None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        self.limit = limit
        self.allowed = frozenset(allowed) if allowed is not None else None
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if len(value) > 63:
            return OTHER
        if self.allowed is not None:
            return value if value in self.allowed else OTHER
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER

    @property
    def values(self) -> frozenset[str]:
        return self.allowed if self.allowed is not None else frozenset(self._seen)
