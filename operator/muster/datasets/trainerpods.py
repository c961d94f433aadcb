"""The dataset gate's part for Kubeflow Trainer pods: a pod of a TrainJob whose dataset
initializer downloaded an approved source re-measures that download before it starts.

The TrainJob itself is judged by :class:`muster.datasets.gate.DatasetGate` (its source must be
an approved Dataset's); here its trainer pods get a verifier init container for the directory
the download landed in (``/workspace/dataset`` of the initializer volume, mounted read-only by
sub-path), and are refused when validated if it is missing or altered. The algorithm is the
one the model area shares (:class:`muster.admission.trainerpods.TrainerGate`); this module says
what is the dataset area's in it.

A separate gate (same check name) so that its init containers are one patch of their own,
combined with the dataset gate's by container name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from muster.admission import trainerpods as trainergates
from muster.datasets import catalog as datasetcatalog
from muster.datasets import gate
from muster.datasets.rules import approval
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import findings, gates, trainerpods
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services

__all__ = ["TrainerDatasetGate", "gates_for"]


def _policies(
    index: datasetregistry.DatasetIndex, labels: Mapping[str, str]
) -> tuple[approval.EffectivePolicy | None, findings.PolicyRef | None]:
    named = index.named_policies_for(labels)
    return approval.effective_policy(list(named.values())), approval.deciding_policy(named)


def _judge(
    download: trainerpods.Download,
    index: datasetregistry.DatasetIndex,
    policy: approval.EffectivePolicy,
) -> trainergates.Judged:
    where = f'the dataset initializer of TrainJob "{download.trainjob}"'
    match = approval.judge_use(approval.DatasetUse("sourceUri", where, download.uri), index, policy)
    return trainergates.Judged(match.dataset, match.finding)


PART = trainergates.TrainerPart[datasetregistry.DatasetIndex, approval.EffectivePolicy](
    part="dataset",
    check=approval.CHECK,
    registry_subject="datasets",
    registry_unavailable="DatasetRegistryUnavailable",
    lookup_failed="DatasetLookupFailed",
    verifier_missing="DatasetVerifierMissing",
    policies=_policies,
    judge=_judge,
)


@dataclasses.dataclass
class TrainerDatasetGate(
    trainergates.TrainerGate[datasetregistry.DatasetIndex, approval.EffectivePolicy]
):
    """Trainer pods re-measure the dataset their TrainJob's initializer downloaded."""

    part: trainergates.TrainerPart[datasetregistry.DatasetIndex, approval.EffectivePolicy] = PART


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
