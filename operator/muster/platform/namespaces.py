"""Namespace labels: one index per process, read by every gate and controller that selects
namespaces by their labels (ImagePolicies, GPUStackPolicies, ModelPolicies, BOMs, revocation).

A namespace watch feeds it; a namespace it does not know, or knows for longer than ``ttl``
seconds, is read from the API once, however many gates ask at the same moment (one read in
flight per namespace, shared by all who wait); one seen more than half ``ttl`` ago is read
again in the background while its labels still answer. Entries age out even when a watch fed
them: a replica whose watches are paused by peering still answers admission, so what it holds
must not outlive ``ttl``. A read that fails raises to every waiter and is kept by no one: each gate
fails closed as it did with a cache of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from muster.kernel import findings
from muster.platform import kubeapi, refreshahead, statechanges
from muster.platform.services import Services

if TYPE_CHECKING:
    import kopf  # imported where controllers register: ``muster check`` runs none

__all__ = [
    "KEY",
    "TTL_SECONDS",
    "UNREADABLE_ERRORS",
    "NamespaceIndex",
    "index_for",
    "unavailable",
    "watch",
]

KEY = "namespaces"
# How long labels are trusted once seen (the strictest any gate kept before they shared one).
TTL_SECONDS = 10.0


@dataclasses.dataclass
class NamespaceIndex:
    """The labels of each namespace, as last seen by the watch or read from the API."""

    kube: kubeapi.KubeApi
    ttl: float = TTL_SECONDS
    # name -> (monotonic time it was seen, its labels)
    seen: dict[str, tuple[float, Mapping[str, str]]] = dataclasses.field(default_factory=dict)
    _reads: dict[str, asyncio.Future[Mapping[str, str]]] = dataclasses.field(default_factory=dict)
    # The kopf registries whose namespace watch feeds this index (one handler each).
    _watches: weakref.WeakSet[kopf.OperatorRegistry] = dataclasses.field(
        default_factory=weakref.WeakSet
    )
    _ahead: refreshahead.RefreshAhead = dataclasses.field(
        default_factory=lambda: refreshahead.RefreshAhead("namespace labels")
    )

    def update(self, name: str, labels: Mapping[str, str] | None) -> None:
        """What the watch saw: the namespace's labels now, or None when it was deleted."""
        if labels is None:
            self.seen.pop(name, None)
        else:
            self.seen[name] = (time.monotonic(), {str(k): str(v) for k, v in labels.items()})
        statechanges.changed()  # gates read these labels (admission/verdicts.py)

    def last_known(self, name: str) -> Mapping[str, str] | None:
        """The labels last seen, however long ago (None: never seen); for a quick guess that
        is checked again later, never for a decision."""
        found = self.seen.get(name)
        return None if found is None else found[1]

    async def labels(self, name: str, *, via: kubeapi.KubeApi | None = None) -> Mapping[str, str]:
        """The namespace's labels, read from the API (through ``via`` when given: a background
        controller's own client) when not seen within ``ttl``; raises what the read raised."""
        found = self.seen.get(name)
        if found is not None and time.monotonic() - found[0] < self.ttl:
            if self._ahead.due(found[0], self.ttl) and name not in self._reads:
                # Read again in the background while these labels still answer (the same
                # shared read a waiter joins once they are past ``ttl``).
                kube = via or self.kube
                # Shielded: cancelled on shutdown, it leaves the read to whoever joined it.
                self._ahead.start(lambda: asyncio.shield(self._shared_read(name, kube)), name)
            return found[1]
        # Shielded: a waiter cut off by its deadline does not cancel the read for the others.
        return await asyncio.shield(self._shared_read(name, via or self.kube))

    def _shared_read(self, name: str, kube: kubeapi.KubeApi) -> asyncio.Future[Mapping[str, str]]:
        """The read of ``name`` in flight, started when there is none."""
        read = self._reads.get(name)
        if read is None:
            read = self._reads[name] = asyncio.ensure_future(self._read(name, kube))
            read.add_done_callback(lambda done: self._finished(name, done))
        return read

    async def _read(self, name: str, kube: kubeapi.KubeApi) -> Mapping[str, str]:
        started = time.monotonic()
        obj: dict[str, Any] = await kube.get(f"/api/v1/namespaces/{name}")
        raw = (obj.get("metadata") or {}).get("labels") or {}
        labels = {str(k): str(v) for k, v in raw.items()}
        known = self.seen.get(name)
        if known is None or known[0] < started:  # the watch may have told newer meanwhile
            self.seen[name] = (time.monotonic(), labels)
            statechanges.changed()
        return labels

    def _finished(self, name: str, done: asyncio.Future[Mapping[str, str]]) -> None:
        if self._reads.get(name) is done:
            del self._reads[name]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have given up on it already


def index_for(services: Services[object]) -> NamespaceIndex:
    """The one namespace index of this process."""
    return services.state(KEY, NamespaceIndex, lambda: NamespaceIndex(services.kube))


def watch(registry: kopf.OperatorRegistry, services: Services[object]) -> NamespaceIndex:
    """Feed this process's index from a namespace watch on ``registry``: every area that reads
    namespace labels asks for it, and the first one registers it."""
    import kopf

    index = index_for(services)
    if registry in index._watches:
        return index
    index._watches.add(registry)

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def index_namespace(
        name: str, labels: Mapping[str, str], type: str | None, **_: Any
    ) -> None:
        index.update(name, None if type == "DELETED" else labels)

    return index


# What a failed read of a namespace raises (the API refused or did not answer).
UNREADABLE_ERRORS = (kubeapi.ApiError, OSError, TimeoutError)


def unavailable(check: str, namespace: str, error: Exception) -> findings.Finding:
    """The finding of a gate that could not read the namespace's labels to select its
    ImagePolicies: it fails closed (the pipeline denies in enforce mode)."""
    return findings.Finding(
        check=check,
        reason="NamespaceUnavailable",
        subject=f"namespace {namespace}",
        message=f"cannot read its labels to select ImagePolicies: {error}",
    )
