"""An in-memory catalog of one kind of approved object (Models, Datasets) and of the policies
that select the namespaces bound to it, as every reader in one process shares it.

The index is fed by the operator's watches (fast path) and re-listed from the API when it is
older than ``max_age`` or when a lookup misses (and in the background, off the admission path,
once it is half that old), so a replica whose watches are paused by peering, or one that has
just started, still judges against the registry as it is, within seconds. No
CRD (404) means no object and no policy: nothing selects a namespace. A policy whose new version
is invalid keeps protecting its namespaces with its last good version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from muster.kernel import messages
from muster.platform import kubeapi, refreshahead, statechanges

__all__ = ["Catalog", "PolicyIndex", "list_items"]

PolicyT = TypeVar("PolicyT")
IndexT = TypeVar("IndexT", bound="PolicyIndex[Any]")


class PolicyIndex(Protocol[PolicyT]):
    """What a catalog's index keeps of the policies: by name, and why any is invalid."""

    policies: dict[str, PolicyT]
    invalid: dict[str, str]  # "Kind/name" -> why

    def put_policy(self, name: str, spec: PolicyT) -> None: ...


class Catalog(Generic[IndexT, PolicyT]):
    """The objects at ``objects_path`` and the policies at ``policies_path``, in memory.

    Each kind indexes its own objects (:meth:`object_changed`); the policies, the re-list and
    its age are the same for every kind."""

    def __init__(
        self,
        kube: kubeapi.KubeApi,
        *,
        objects_path: str,
        policies_path: str,
        policy_kind: str,
        parse_policy: Callable[[Mapping[str, Any]], PolicyT],
        empty: Callable[[], IndexT],
        max_age: float,
        min_reload_interval: float,
    ) -> None:
        self.kube = kube
        self.objects_path = objects_path
        self.policies_path = policies_path
        self.policy_kind = policy_kind
        self._parse_policy = parse_policy
        self._empty = empty
        self.index = empty()
        self.max_age = max_age
        self.min_reload_interval = min_reload_interval
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._ahead = refreshahead.RefreshAhead(f"the {objects_path.rsplit('/', 1)[-1]} catalog")
        # Told about every look-up of the index (True: answered from memory; False: re-listed
        # from the API), e.g. Metrics.cache_lookup("models", hit=...).
        self.cache_observer: Callable[[bool], None] | None = None

    @property
    def loaded(self) -> bool:
        """Whether the index was listed from the API at least once."""
        return self._loaded_at > float("-inf")

    # -- fed by the operator's watches ------------------------------------------------------

    def object_changed(
        self, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], generation: object
    ) -> str | None:
        """Index an object; returns why it is invalid (and drops it) when it is."""
        raise NotImplementedError

    def policy_changed(self, name: str, spec: Mapping[str, Any]) -> str | None:
        """Index a policy; returns why it is invalid when it is (then the last good version,
        if any, stays in force)."""
        try:
            self.index.put_policy(name, self._parse_policy(spec))
        except ValueError as error:  # pydantic's ValidationError among them
            # A broken policy must not silently stop protecting its namespaces.
            why = messages.first_error(error)
            self.index.invalid[f"{self.policy_kind}/{name}"] = why
            return why
        return None

    def policy_deleted(self, name: str) -> None:
        self.index.policies.pop(name, None)
        self.index.invalid.pop(f"{self.policy_kind}/{name}", None)

    # -- read by the gates ------------------------------------------------------------------

    async def current(self) -> IndexT:
        """The index, re-listed first when older than ``max_age``."""
        if time.monotonic() - self._loaded_at > self.max_age:
            self.observe(hit=False)
            # Every admission in flight finds it stale at once: those queued on the lock must
            # not re-list it again one after another (seconds of pod creations at 50 clients).
            await self.reload(if_older_than=self.max_age)
        else:
            self.observe(hit=True)
            if self._ahead.due(self._loaded_at, self.max_age):
                # Re-listed in the background while this index still answers: the admissions
                # of a burst do not wait for it, and it is still never used past max_age.
                self._ahead.start(
                    lambda: self.reload(if_older_than=self.max_age * self._ahead.fraction)
                )
        return self.index

    async def close(self) -> None:
        """Cancel a background re-list still running."""
        await self._ahead.close()

    def observe(self, *, hit: bool) -> None:
        if self.cache_observer is not None:
            self.cache_observer(hit)

    async def reload(self, *, if_older_than: float | None = None) -> bool:
        """Re-list the objects and the policies; False when skipped (listed recently)."""
        async with self._lock:
            age = time.monotonic() - self._loaded_at
            if if_older_than is not None and age < if_older_than:
                return False
            # Both lists are awaited to the end before either failure is raised: none is left
            # running on a client its caller may close next.
            listed = await asyncio.gather(
                list_items(self.kube, self.objects_path),
                list_items(self.kube, self.policies_path),
                return_exceptions=True,
            )
            objects, policies = (_raised(outcome) for outcome in listed)
            previous = self._start_over()
            for item in objects.get("items") or ():
                metadata = item.get("metadata") or {}
                self.object_changed(
                    str(metadata.get("name", "")),
                    item.get("spec") or {},
                    item.get("status") or {},
                    metadata.get("generation"),
                )
            for item in policies.get("items") or ():
                name = str((item.get("metadata") or {}).get("name", ""))
                if self.policy_changed(name, item.get("spec") or {}) and name in previous.policies:
                    self.index.policies[name] = previous.policies[name]
            self._loaded_at = time.monotonic()
            statechanges.changed()  # gates read the index (admission/verdicts.py)
            return True

    def _start_over(self) -> IndexT:
        """Empties the index for a re-list; returns the one it replaces."""
        previous, self.index = self.index, self._empty()
        return previous


async def list_items(kube: kubeapi.KubeApi, path: str) -> dict[str, Any]:
    """The list at ``path``; no items where the apiserver does not serve it (no CRD)."""
    try:
        return await kube.get(path)
    except kubeapi.ApiError as error:
        # No CRD, no policy: nothing can select a namespace, so there is nothing to enforce.
        # Every other failure propagates and fails the gates safe.
        if error.status == 404:
            return {"items": []}
        raise


def _raised(outcome: dict[str, Any] | BaseException) -> dict[str, Any]:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
