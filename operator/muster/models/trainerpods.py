"""The model gate's part for Kubeflow Trainer pods: a pod of a TrainJob whose model initializer
downloaded an approved Model's source re-measures that download before it starts.

The TrainJob itself is judged by :class:`muster.models.gate.ModelGate` (its model source must
be an approved Model's); here its trainer pods get a verifier init container for the directory
the download landed in (``/workspace/model`` of the initializer volume, mounted read-only by
sub-path), and are refused when validated if it is missing or altered. The algorithm is the
one the dataset area shares (:class:`muster.admission.trainerpods.TrainerGate`); this module
says what is the model area's in it.

A separate gate (same check name) so that its init containers are one patch of their own,
combined with the model gate's by container name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from muster.admission import trainerpods as trainergates
from muster.kernel import findings, trainerpods
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry

__all__ = ["TrainerModelGate"]


def _policies(
    index: modelregistry.Index, labels: Mapping[str, str]
) -> tuple[modelregistry.ModelPolicySpec | None, findings.PolicyRef | None]:
    named = index.named_policies_for(labels)
    return modelgate.effective_policy(named), modelgate.deciding_policy(named)


def _judge(
    download: trainerpods.Download,
    index: modelregistry.Index,
    policy: modelregistry.ModelPolicySpec,
) -> trainergates.Judged:
    where = f'TrainJob "{download.trainjob}" model initializer'
    use = modelgate.ModelUse("sourceUri", where, download.uri, fetcher=True)
    match = modelgate.judge_use(use, index, policy)
    return trainergates.Judged(match.model, match.finding)


PART = trainergates.TrainerPart[modelregistry.Index, modelregistry.ModelPolicySpec](
    part="model",
    check=modelgate.CHECK,
    registry_subject="models",
    registry_unavailable="ModelRegistryUnavailable",
    lookup_failed="ModelLookupFailed",
    verifier_missing="ModelVerifierMissing",
    policies=_policies,
    judge=_judge,
)


@dataclasses.dataclass
class TrainerModelGate(
    trainergates.TrainerGate[modelregistry.Index, modelregistry.ModelPolicySpec]
):
    """Trainer pods re-measure the model their TrainJob's initializer downloaded."""

    part: trainergates.TrainerPart[modelregistry.Index, modelregistry.ModelPolicySpec] = PART
