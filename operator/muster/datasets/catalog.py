"""The Dataset index every reader in one process shares: the dataset gate, the model gate (which
judges what a Model was trained on and strict volume mode) and the dataset controllers.

How it is fed, re-listed and kept when a DatasetPolicy turns invalid is every catalog's (see
:mod:`muster.platform.catalogs`); what is the Datasets' own is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from muster.datasets.rules import registry
from muster.kernel import crds, messages
from muster.platform import catalogs, kubeapi
from muster.platform.services import Services

__all__ = ["DATASETS_PATH", "POLICIES_PATH", "DatasetCatalog", "catalog_for"]

DATASETS_PATH = f"/apis/{crds.GROUP}/{crds.VERSION}/datasets"
POLICIES_PATH = f"/apis/{crds.GROUP}/{crds.VERSION}/datasetpolicies"
# The key of the process's one catalog in Services.areas.
KEY = "datasets"


class DatasetCatalog(catalogs.Catalog[registry.DatasetIndex, registry.DatasetPolicySpec]):
    """Datasets and DatasetPolicies, in memory."""

    def __init__(
        self,
        kube: kubeapi.KubeApi,
        *,
        max_age: float = 30.0,
        min_reload_interval: float = 1.0,
    ) -> None:
        # Dataset name -> the Compiled reason of its invalid spec (InvalidSpec, InvalidLicense).
        self.invalid_reasons: dict[str, str] = {}
        super().__init__(
            kube,
            objects_path=DATASETS_PATH,
            policies_path=POLICIES_PATH,
            policy_kind="DatasetPolicy",
            parse_policy=registry.DatasetPolicySpec.model_validate,
            empty=registry.DatasetIndex,
            max_age=max_age,
            min_reload_interval=min_reload_interval,
        )

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
            why = messages.first_error(error)
            self.index.invalid[f"Dataset/{name}"] = why
            self.invalid_reasons[name] = registry.invalid_reason(error)
            return why
        self.invalid_reasons.pop(name, None)
        self.index.put_dataset(entry)
        return None

    object_changed = dataset_changed

    def dataset_deleted(self, name: str) -> None:
        self.index.datasets.pop(name, None)
        self.index.invalid.pop(f"Dataset/{name}", None)
        self.invalid_reasons.pop(name, None)

    # -- read by the gates ------------------------------------------------------------------

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

    def _start_over(self) -> registry.DatasetIndex:
        self.invalid_reasons = {}
        return super()._start_over()


def catalog_for(services: Services[object]) -> DatasetCatalog:
    """The one DatasetCatalog of this process, shared by the gates and the controllers."""

    def create() -> DatasetCatalog:
        catalog = DatasetCatalog(services.kube)
        metrics = services.metrics
        catalog.cache_observer = lambda hit: metrics.cache_lookup("datasets", hit=hit)
        return catalog

    return services.state(KEY, DatasetCatalog, create)
