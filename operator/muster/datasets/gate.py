"""The dataset gate at admission: the Dataset index it reads (the process's one catalog,
muster.datasets.catalog), and the lookups it needs (PVC marks, image volume tags; namespace
labels come from the process's one index, muster.platform.namespaces).

Pods are judged when created (their volumes cannot change later); workloads when created or
updated. A pod gets its verifiers and ``muster.dev/datasets`` annotation when mutated, and is
refused when validated if a verifier is missing or altered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from muster.datasets import catalog as datasetcatalog
from muster.datasets.rules import approval
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import findings, gates, references, subjects
from muster.platform import kubeapi, pvcs, registries
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services, SharedSettings
from muster.signatures.rules import verifiers

__all__ = ["DatasetGate", "DatasetGateSettings", "gates_for"]

logger = logging.getLogger("muster.datasets")


class DatasetGateSettings(SharedSettings, Protocol):
    """What the dataset gate reads of the process's settings."""

    # The same Muster image re-measures model and dataset volumes.
    @property
    def model_verifier_image(self) -> str: ...


@dataclasses.dataclass
class DatasetGate:
    """Workloads in namespaces a DatasetPolicy selects may use approved Datasets only."""

    catalog: datasetcatalog.DatasetCatalog
    # The process's one namespace index, shared with the other gates.
    namespaces: platformnamespaces.NamespaceIndex
    kube: kubeapi.KubeApi
    registries: registries.RegistryClient
    verifier_image: str
    name: str = approval.CHECK

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        if subject.subresource or (subject.is_pod and subject.operation != "CREATE"):
            # A pod's volumes and init containers are immutable: what it mounts was judged at
            # CREATE. Judging updates again would block finalizer removal on revoked data.
            return gates.GateResult()
        try:
            labels = await self.namespaces.labels(subject.namespace)
            index = await self.catalog.current()
        except platformnamespaces.UNREADABLE_ERRORS as error:
            return _unavailable(f"cannot read the dataset registry ({error})")
        named = index.named_policies_for(labels)
        policy = approval.effective_policy(list(named.values()))
        if policy is None:
            return gates.GateResult()
        deciding = approval.deciding_policy(named)
        found: list[findings.Finding] = []
        patch: list[Mapping[str, Any]] = []
        judged: list[tuple[subjects.PodTemplate | None, list[approval.DatasetUse]]] = []
        for template in subject.templates:
            if template.partial:
                continue  # a part of a runtime's template: judged on the pods it ends up in
            pvc_datasets, problems = await self._pvc_datasets(subject.namespace, template)
            digests, errors = await self._image_digests(template)
            uses, more = approval.dataset_uses(template, pvc_datasets, index, digests, errors)
            found.extend(problems + more)
            judged.append((template, uses))
        sourced = approval.source_uses(subject)
        if sourced:
            judged.append((None, sourced))
        matches = [[approval.judge_use(u, index, policy) for u in uses] for _, uses in judged]
        if any(m.dataset is None for each in matches for m in each):
            # A Dataset created a moment ago may not have reached this replica's index yet.
            try:
                reloaded = await self.catalog.reload(if_older_than=self.catalog.min_reload_interval)
            except platformnamespaces.UNREADABLE_ERRORS as error:
                return _unavailable(f"cannot read the dataset registry ({error})")
            if reloaded:
                self.catalog.observe(hit=False)  # an unknown Dataset forced a re-list
                index = self.catalog.index
                matches = [
                    [approval.judge_use(u, index, policy) for u in uses] for _, uses in judged
                ]
        if phase is gates.Phase.MUTATE:
            for (where, _), each in zip(judged, matches, strict=True):
                if where is not None:
                    patch.extend(approval.verifier_patch(where, each, self.verifier_image))
            return gates.GateResult(patch=tuple(patch))
        problems = [dataclasses.replace(p, mode=policy.mode) for p in found]
        for (where, _), each in zip(judged, matches, strict=True):
            problems.extend(m.finding for m in each if m.finding is not None)
            if where is not None:
                problems.extend(self._missing_verifiers(where, each, policy.mode))
        return gates.GateResult(findings=tuple(findings.attributed(problems, deciding)))

    async def _pvc_datasets(
        self, namespace: str, template: subjects.PodTemplate
    ) -> tuple[dict[str, str], list[findings.Finding]]:
        """Claim name -> the Dataset its ``muster.dev/dataset`` label or annotation names."""
        found, failed = await pvcs.read_claims(
            self.kube, namespace, template, errors=platformnamespaces.UNREADABLE_ERRORS
        )
        marked: dict[str, str] = {}
        for claim, pvc in found.items():
            metadata = (pvc or {}).get("metadata") or {}  # None: not created yet, unmarked
            for field in ("labels", "annotations"):
                value = (metadata.get(field) or {}).get(datasetregistry.DATASET_PVC_KEY)
                if isinstance(value, str) and value:
                    marked[claim] = value
                    break
        problems = [
            findings.Finding(
                check=approval.CHECK,
                reason="DatasetLookupFailed",
                subject=f'PVC "{claim}"',
                message=f"cannot tell whether it holds a dataset ({error})",
            )
            for claim, error in failed.items()
        ]
        return marked, problems

    async def _image_digests(
        self, template: subjects.PodTemplate
    ) -> tuple[dict[str, str | None], dict[str, str]]:
        """Image volume name -> its digest (pinned, or its tag resolved; None when neither),
        and why a tag could not be resolved. Malformed references get no digest and no error:
        the images and models gates say what is wrong with them."""
        digests: dict[str, str | None] = {}
        errors: dict[str, str] = {}

        async def one(volume: str, text: str) -> None:
            try:
                reference = references.parse(text)
            except references.InvalidReference:
                digests[volume] = None
                return
            if reference.digest is not None:
                digests[volume] = reference.digest
                return
            try:
                digests[volume] = await self.registries.resolve(reference)
            except registries.RegistryError as failure:
                digests[volume] = None
                errors[volume] = str(failure)

        await asyncio.gather(
            *(one(volume, text) for volume, text in approval.image_volumes(template).items())
        )
        return digests, errors

    def _missing_verifiers(
        self,
        template: subjects.PodTemplate,
        matches: Sequence[approval.Match],
        mode: findings.Mode,
    ) -> list[findings.Finding]:
        return verifiers.missing_verifiers(
            template,
            (
                (match.use.label, expected)
                for match, expected in approval.expected_verifiers(matches, self.verifier_image)
            ),
            check=approval.CHECK,
            reason="DatasetVerifierMissing",
            mode=mode,
        )


def _unavailable(message: str) -> gates.GateResult:
    return gates.registry_unavailable(approval.CHECK, "DatasetRegistryUnavailable", message)


def gates_for(services: Services[DatasetGateSettings]) -> Sequence[gates.Gate]:
    """The dataset gate of this process, on the catalog its controllers and the model gate
    read too."""
    return [
        DatasetGate(
            catalog=datasetcatalog.catalog_for(services),
            namespaces=platformnamespaces.index_for(services),
            kube=services.kube,
            registries=services.registries,
            verifier_image=services.settings.model_verifier_image,
        )
    ]
