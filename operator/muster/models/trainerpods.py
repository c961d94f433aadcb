"""The model gate's part for Kubeflow Trainer pods: a pod of a TrainJob whose model initializer
downloaded an approved Model's source re-measures that download before it starts.

The TrainJob itself is judged by :class:`muster.models.gate.ModelGate` (its model source must
be an approved Model's); here its trainer pods get a verifier init container for the directory
the download landed in (``/workspace/model`` of the initializer volume, mounted read-only by
sub-path), and are refused when validated if it is missing or altered. Which downloads a pod
reads is decided in :mod:`muster.kernel.trainerpods` (pure); the TrainJob is read here.

A separate gate (same check name) so that its init containers are one patch of their own,
combined with the model gate's by container name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from muster.kernel import findings, gates, podvolumes, subjects, trainerpods
from muster.models import gate as modeladmission
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi, trainjobs
from muster.platform import namespaces as platformnamespaces
from muster.signatures.rules.verifiers import (
    VERIFIER_FIELDS,
    missing_verifiers,
    verifier_container,
)

__all__ = ["TrainerModelGate"]


@dataclasses.dataclass
class TrainerModelGate:
    """Trainer pods re-measure the model their TrainJob's initializer downloaded."""

    catalog: modeladmission.ModelCatalog
    namespaces: platformnamespaces.NamespaceIndex
    kube: kubeapi.KubeApi
    verifier_image: str
    name: str = modelgate.CHECK

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
            return _result(phase, _finding("ModelRegistryUnavailable", "models", str(error)))
        named = index.named_policies_for(labels)
        policy = modelgate.effective_policy(named)
        if policy is None:
            return gates.GateResult()
        deciding = modelgate.deciding_policy(named)
        try:
            obj = await trainjobs.read_trainjob(self.kube, subject.namespace, trainjob)
        except platformnamespaces.UNREADABLE_ERRORS as error:
            # Fail closed: the pod may read a download nobody can say is approved.
            lookup = _finding(
                "ModelLookupFailed",
                f'TrainJob "{trainjob}"',
                f"cannot read the TrainJob this pod belongs to, so whether it reads an "
                f"unverified model download cannot be told ({error})",
                policy.mode,
            )
            return _result(phase, *findings.attributed([lookup], deciding))
        if obj is None:
            return gates.GateResult()
        template = subject.templates[0]
        wanted = [d for d in trainerpods.downloads(trainjob, obj, template) if d.part == "model"]
        if not wanted:
            return gates.GateResult()
        matches = _judge(wanted, index, policy)
        if any(m.model is None for _, m in matches):
            # A Model registered a moment ago may not have reached this replica's index yet.
            try:
                if await self.catalog.reload(if_older_than=self.catalog.min_reload_interval):
                    self.catalog.observe(hit=False)
                    matches = _judge(wanted, self.catalog.index, policy)
            except platformnamespaces.UNREADABLE_ERRORS as error:
                return _result(phase, _finding("ModelRegistryUnavailable", "models", str(error)))
        expected = [
            (
                download,
                verifier_container(
                    download.volume,
                    match.model.spec.digest,
                    self.verifier_image,
                    match.model.spec.hashing,
                    sub_path=download.sub_path or None,
                ),
            )
            for download, match in matches
            if match.model is not None and match.finding is None
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
    index: modelregistry.Index,
    policy: modelregistry.ModelPolicySpec,
) -> list[tuple[trainerpods.Download, modelgate.Match]]:
    # Judged again at the pod: a Model revoked since the TrainJob was admitted stops it here.
    return [
        (
            d,
            modelgate.judge_use(
                modelgate.ModelUse(
                    "sourceUri", f'TrainJob "{d.trainjob}" model initializer', d.uri, fetcher=True
                ),
                index,
                policy,
            ),
        )
        for d in wanted
    ]


def _missing(
    template: subjects.PodTemplate,
    expected: list[tuple[trainerpods.Download, dict[str, Any]]],
    mode: findings.Mode,
) -> list[findings.Finding]:
    return missing_verifiers(
        template,
        [(download.label, container) for download, container in expected],
        check=modelgate.CHECK,
        reason="ModelVerifierMissing",
        mode=mode,
    )


def _finding(
    reason: str, subject: str, message: str, mode: findings.Mode = findings.Mode.ENFORCE
) -> findings.Finding:
    return findings.Finding(
        check=modelgate.CHECK, reason=reason, subject=subject, message=message, mode=mode
    )


def _result(phase: gates.Phase, *found: findings.Finding) -> gates.GateResult:
    # Findings count only when validating; the mutating pass writes nothing it cannot justify.
    return gates.GateResult(findings=found if phase is gates.Phase.VALIDATE else ())
