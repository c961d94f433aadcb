"""The dataset gate's part for Kubeflow Trainer pods: a pod of a TrainJob whose dataset
initializer downloaded an approved source re-measures that download before it starts.

The TrainJob itself is judged by :class:`muster.datasets.gate.DatasetGate` (its source must be
an approved Dataset's); here its trainer pods get a verifier init container for the directory
the download landed in (``/workspace/dataset`` of the initializer volume, mounted read-only by
sub-path), and are refused when validated if it is missing or altered. Which downloads a pod
reads is decided in :mod:`muster.kernel.trainerpods` (pure); the TrainJob is read here.

A separate gate (same check name) so that its init containers are one patch of their own,
combined with the dataset gate's by container name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from muster.datasets import catalog as datasetcatalog
from muster.datasets import gate
from muster.datasets.rules import approval
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import findings, gates, podvolumes, subjects, trainerpods
from muster.platform import kubeapi, trainjobs
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services
from muster.signatures.rules.verifiers import (
    VERIFIER_FIELDS,
    missing_verifiers,
    verifier_container,
)

__all__ = ["TrainerDatasetGate", "gates_for"]


@dataclasses.dataclass
class TrainerDatasetGate:
    """Trainer pods re-measure the dataset their TrainJob's initializer downloaded."""

    catalog: datasetcatalog.DatasetCatalog
    namespaces: platformnamespaces.NamespaceIndex
    kube: kubeapi.KubeApi
    verifier_image: str
    name: str = approval.CHECK

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        if not subject.is_pod or subject.operation != "CREATE" or subject.subresource:
            return gates.GateResult()
        trainjob = trainerpods.trainjob_name(subject.object.get("metadata") or {})
        if trainjob is None or not subject.templates:
            return gates.GateResult()
        try:
            labels = await self.namespaces.labels(subject.namespace)
            index = await self.catalog.current()
        except platformnamespaces.UNREADABLE_ERRORS as error:
            return _result(phase, _finding("DatasetRegistryUnavailable", "datasets", str(error)))
        named = index.named_policies_for(labels)
        policy = approval.effective_policy(list(named.values()))
        if policy is None:
            return gates.GateResult()
        deciding = approval.deciding_policy(named)
        try:
            obj = await trainjobs.read_trainjob(self.kube, subject.namespace, trainjob)
        except platformnamespaces.UNREADABLE_ERRORS as error:
            # Fail closed: the pod may read a download nobody can say is approved.
            lookup = _finding(
                "DatasetLookupFailed",
                f'TrainJob "{trainjob}"',
                f"cannot read the TrainJob this pod belongs to, so whether it reads an "
                f"unverified dataset download cannot be told ({error})",
                policy.mode,
            )
            return _result(phase, *findings.attributed([lookup], deciding))
        if obj is None:
            return gates.GateResult()
        template = subject.templates[0]
        wanted = [d for d in trainerpods.downloads(trainjob, obj, template) if d.part == "dataset"]
        if not wanted:
            return gates.GateResult()
        matches = _judge(wanted, index, policy)
        if any(m.dataset is None for _, m in matches):
            # A Dataset registered a moment ago may not have reached this replica's index yet.
            try:
                if await self.catalog.reload(if_older_than=self.catalog.min_reload_interval):
                    self.catalog.observe(hit=False)
                    matches = _judge(wanted, self.catalog.index, policy)
            except platformnamespaces.UNREADABLE_ERRORS as error:
                return _result(
                    phase, _finding("DatasetRegistryUnavailable", "datasets", str(error))
                )
        expected = [
            (
                download,
                verifier_container(
                    download.volume,
                    match.dataset.spec.digest,
                    self.verifier_image,
                    match.dataset.spec.hashing,
                    sub_path=download.sub_path or None,
                ),
            )
            for download, match in matches
            if match.dataset is not None and match.finding is None
        ]
        if phase is gates.Phase.MUTATE:
            return gates.GateResult(
                patch=tuple(
                    podvolumes.init_container_ops(
                        template, [c for _, c in expected], compare=VERIFIER_FIELDS
                    )
                )
            )
        problems = [m.finding for _, m in matches if m.finding is not None]
        problems.extend(_missing(template, expected, policy.mode))
        return gates.GateResult(findings=tuple(findings.attributed(problems, deciding)))


def _judge(
    wanted: list[trainerpods.Download],
    index: datasetregistry.DatasetIndex,
    policy: approval.EffectivePolicy,
) -> list[tuple[trainerpods.Download, approval.Match]]:
    # Judged again at the pod: a Dataset revoked since the TrainJob was admitted stops it here.
    return [
        (d, approval.judge_use(approval.DatasetUse("sourceUri", _where(d), d.uri), index, policy))
        for d in wanted
    ]


def _where(download: trainerpods.Download) -> str:
    return f'the dataset initializer of TrainJob "{download.trainjob}"'


def _missing(
    template: subjects.PodTemplate,
    expected: list[tuple[trainerpods.Download, dict[str, Any]]],
    mode: findings.Mode,
) -> list[findings.Finding]:
    return missing_verifiers(
        template,
        [(download.label, container) for download, container in expected],
        check=approval.CHECK,
        reason="DatasetVerifierMissing",
        mode=mode,
    )


def _finding(
    reason: str, subject: str, message: str, mode: findings.Mode = findings.Mode.ENFORCE
) -> findings.Finding:
    return findings.Finding(
        check=approval.CHECK, reason=reason, subject=subject, message=message, mode=mode
    )


def _result(phase: gates.Phase, *found: findings.Finding) -> gates.GateResult:
    # Findings count only when validating; the mutating pass writes nothing it cannot justify.
    return gates.GateResult(findings=found if phase is gates.Phase.VALIDATE else ())


def gates_for(services: Services[gate.DatasetGateSettings]) -> Sequence[gates.Gate]:
    """The dataset gate, then this one, on the same catalog and namespace index."""
    return [
        *gate.gates_for(services),
        TrainerDatasetGate(
            catalog=datasetcatalog.catalog_for(services),
            namespaces=platformnamespaces.index_for(services),
            kube=services.kube,
            verifier_image=services.settings.model_verifier_image,
        ),
    ]
