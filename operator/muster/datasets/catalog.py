"""The Dataset index every reader in one process shares: the dataset gate, the model gate (which
judges what a Model was trained on and strict volume mode) and the dataset controllers.

The index is fed by the operator's watches (fast path) and re-listed from the API when it is
older than ``max_age`` or when a lookup misses, so a replica whose watches are paused by peering,
or one that has just started, still judges against the registry as it is, within seconds. No
Dataset CRD (404) means no Dataset and no DatasetPolicy: nothing selects a namespace. A
DatasetPolicy whose new version is invalid keeps protecting its namespaces with its last good
version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from muster.datasets.rules import registry
from muster.kernel import crds
from muster.platform import kubeapi
from muster.platform.services import Services

__all__ = ["DATASETS_PATH", "POLICIES_PATH", "DatasetCatalog", "catalog_for"]

DATASETS_PATH = f"/apis/{crds.GROUP}/{crds.VERSION}/datasets"
POLICIES_PATH = f"/apis/{crds.GROUP}/{crds.VERSION}/datasetpolicies"
# The key of the process's one catalog in Services.areas.
KEY = "datasets"


class DatasetCatalog:
    """Datasets and DatasetPolicies, in memory."""

    def __init__(
        self,
        kube: kubeapi.KubeApi,
        *,
        max_age: float = 30.0,
        min_reload_interval: float = 1.0,
    ) -> None:
        self.kube = kube
        self.index = registry.DatasetIndex()
        self.max_age = max_age
        self.min_reload_interval = min_reload_interval
        # Dataset name -> the Compiled reason of its invalid spec (InvalidSpec, InvalidLicense).
        self.invalid_reasons: dict[str, str] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        # Told about every look-up of the index (True: answered from memory; False: re-listed
        # from the API), e.g. Metrics.cache_lookup("datasets", hit=...).
        self.cache_observer: Callable[[bool], None] | None = None

    @property
    def loaded(self) -> bool:
        """Whether the index was listed from the API at least once."""
        return self._loaded_at > float("-inf")

    # -- fed by the operator's watches ------------------------------------------------------

    def dataset_changed(
        self, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], generation: object
    ) -> str | None:
        """Index a Dataset; returns why it is invalid (and drops it) when it is. ``generation``
        (``metadata.generation``) decides whether its SignatureVerified condition counts."""
        try:
            entry = registry.parse_dataset(name, spec, status, generation=generation)
        except (pydantic.ValidationError, ValueError) as error:
            self.index.datasets.pop(name, None)
            why = _first_error(error)
            self.index.invalid[f"Dataset/{name}"] = why
            self.invalid_reasons[name] = registry.invalid_reason(error)
            return why
        self.invalid_reasons.pop(name, None)
        self.index.put_dataset(entry)
        return None

    def dataset_deleted(self, name: str) -> None:
        self.index.datasets.pop(name, None)
        self.index.invalid.pop(f"Dataset/{name}", None)
        self.invalid_reasons.pop(name, None)

    def policy_changed(self, name: str, spec: Mapping[str, Any]) -> str | None:
        """Index a DatasetPolicy; returns why it is invalid when it is (then the last good
        version, if any, stays in force)."""
        try:
            self.index.put_policy(name, registry.DatasetPolicySpec.model_validate(spec))
        except (pydantic.ValidationError, ValueError) as error:
            # A broken policy must not silently stop protecting its namespaces.
            why = _first_error(error)
            self.index.invalid[f"DatasetPolicy/{name}"] = why
            return why
        return None

    def policy_deleted(self, name: str) -> None:
        self.index.policies.pop(name, None)
        self.index.invalid.pop(f"DatasetPolicy/{name}", None)

    # -- read by the gates ------------------------------------------------------------------

    async def current(self) -> registry.DatasetIndex:
        """The index, re-listed first when older than ``max_age``."""
        if time.monotonic() - self._loaded_at > self.max_age:
            self.observe(hit=False)
            await self.reload()
        else:
            self.observe(hit=True)
        return self.index

    async def find(self, name: str) -> registry.DatasetEntry | None:
        """The Dataset ``name``; a miss re-lists once (not more often than
        ``min_reload_interval``), so a Dataset created a moment ago is found."""
        index = await self.current()
        entry = index.by_name(name)
        if entry is None and f"Dataset/{name}" not in index.invalid:
            if await self.reload(if_older_than=self.min_reload_interval):
                self.observe(hit=False)
            entry = self.index.by_name(name)
        return entry

    def observe(self, *, hit: bool) -> None:
        if self.cache_observer is not None:
            self.cache_observer(hit)

    async def reload(self, *, if_older_than: float | None = None) -> bool:
        """Re-list Datasets and DatasetPolicies; False when skipped (listed recently)."""
        async with self._lock:
            age = time.monotonic() - self._loaded_at
            if if_older_than is not None and age < if_older_than:
                return False
            # Both lists are awaited to the end before either failure is raised: none is left
            # running on a client its caller may close next.
            listed = await asyncio.gather(
                _list(self.kube, DATASETS_PATH),
                _list(self.kube, POLICIES_PATH),
                return_exceptions=True,
            )
            datasets, policies = (_raised(outcome) for outcome in listed)
            previous, self.index = self.index, registry.DatasetIndex()
            self.invalid_reasons = {}
            for item in datasets.get("items") or ():
                metadata = item.get("metadata") or {}
                self.dataset_changed(
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
            return True


async def _list(kube: kubeapi.KubeApi, path: str) -> dict[str, Any]:
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


def _first_error(error: Exception) -> str:
    if isinstance(error, pydantic.ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(error)


def catalog_for(services: Services[object]) -> DatasetCatalog:
    """The one DatasetCatalog of this process, shared by the gates and the controllers."""

    def create() -> DatasetCatalog:
        catalog = DatasetCatalog(services.kube)
        metrics = services.metrics
        catalog.cache_observer = lambda hit: metrics.cache_lookup("datasets", hit=hit)
        return catalog

    return services.state(KEY, DatasetCatalog, create)
