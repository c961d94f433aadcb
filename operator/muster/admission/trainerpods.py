"""Kubeflow Trainer pods re-measure what their TrainJob's initializer downloaded: the one gate
the dataset and model areas each instantiate for their part of the TrainJob
(:mod:`muster.datasets.trainerpods`, :mod:`muster.models.trainerpods`).

The TrainJob itself is judged by the area's own gate (its source must be an approved object's);
here its trainer pods get a verifier init container for the directory the download landed in
(the part's directory of the initializer volume, mounted read-only by sub-path), and are refused
when validated if it is missing or altered. Which downloads a pod reads is decided in
:mod:`muster.kernel.trainerpods` (pure); the TrainJob is read here.

A gate of its own (with the area's check name) so that its init containers are one patch of
their own, combined with the area gate's by container name. What differs between the areas (the
part, the catalog, the policies, how one download is judged, the check and reason names) is a
:class:`TrainerPart`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from muster.kernel import findings, gates, podvolumes, subjects, trainerpods
from muster.platform import catalogs, kubeapi, trainjobs
from muster.platform import namespaces as platformnamespaces
from muster.signatures.rules import oms
from muster.signatures.rules.verifiers import (
    VERIFIER_FIELDS,
    missing_verifiers,
    verifier_container,
)

__all__ = ["Entry", "Judged", "Spec", "TrainerGate", "TrainerPart"]


class Moded(Protocol):
    """A policy selecting a namespace, as far as this gate reads it."""

    @property
    def mode(self) -> findings.Mode: ...


IndexT = TypeVar("IndexT", bound=catalogs.PolicyIndex[Any])
PolicyT = TypeVar("PolicyT", bound=Moded)


class Spec(Protocol):
    """What the verifier of an approved object needs: its digest and how it was hashed."""

    @property
    def digest(self) -> str: ...

    @property
    def hashing(self) -> oms.Serialization: ...


class Entry(Protocol):
    """An approved object (a Dataset, a Model) as far as this gate reads it."""

    @property
    def spec(self) -> Spec: ...


@dataclasses.dataclass(frozen=True)
class Judged:
    """One download judged again: the object it matched (None: none registered, which a catalog
    behind the API may explain) and what is wrong (None: nothing)."""

    entry: Entry | None
    finding: findings.Finding | None


@dataclasses.dataclass(frozen=True)
class TrainerPart(Generic[IndexT, PolicyT]):
    """What one area's trainer gate is made of.

    ``policies`` gives the policy the namespace's labels select in an index (None: no policy)
    and the one its findings are attributed to; ``judge`` judges one download under it."""

    part: trainerpods.Part
    check: str
    registry_subject: str
    registry_unavailable: str
    lookup_failed: str
    verifier_missing: str
    policies: Callable[
        [IndexT, Mapping[str, str]], tuple[PolicyT | None, findings.PolicyRef | None]
    ]
    judge: Callable[[trainerpods.Download, IndexT, PolicyT], Judged]


@dataclasses.dataclass
class TrainerGate(Generic[IndexT, PolicyT]):
    """Trainer pods re-measure the ``part`` download of their TrainJob's initializer."""

    catalog: catalogs.Catalog[IndexT, Any]
    namespaces: platformnamespaces.NamespaceIndex
    kube: kubeapi.KubeApi
    verifier_image: str
    part: TrainerPart[IndexT, PolicyT]

    @property
    def name(self) -> str:
        return self.part.check

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        part = self.part
        if not subject.is_pod or subject.operation != "CREATE" or subject.subresource:
            return gates.GateResult()
        trainjob = trainerpods.trainjob_name(subject.object.get("metadata") or {})
        if trainjob is None or not subject.templates:
            return gates.GateResult()
        try:
            labels = await self.namespaces.labels(subject.namespace)
            index = await self.catalog.current()
        except platformnamespaces.UNREADABLE_ERRORS as error:
            return _result(phase, self._unavailable(error))
        policy, deciding = part.policies(index, labels)
        if policy is None:
            return gates.GateResult()
        try:
            obj = await trainjobs.read_trainjob(self.kube, subject.namespace, trainjob)
        except platformnamespaces.UNREADABLE_ERRORS as error:
            # Fail closed: the pod may read a download nobody can say is approved.
            lookup = self._finding(
                part.lookup_failed,
                f'TrainJob "{trainjob}"',
                f"cannot read the TrainJob this pod belongs to, so whether it reads an "
                f"unverified {part.part} download cannot be told ({error})",
                policy.mode,
            )
            return _result(phase, *findings.attributed([lookup], deciding))
        if obj is None:
            return gates.GateResult()
        template = subject.templates[0]
        wanted = [d for d in trainerpods.downloads(trainjob, obj, template) if d.part == part.part]
        if not wanted:
            return gates.GateResult()
        # Judged again at the pod: an object revoked since the TrainJob was admitted stops it here.
        judged = [(d, part.judge(d, index, policy)) for d in wanted]
        if any(j.entry is None for _, j in judged):
            # An object registered a moment ago may not have reached this replica's index yet.
            try:
                if await self.catalog.reload(if_older_than=self.catalog.min_reload_interval):
                    self.catalog.observe(hit=False)
                    index = self.catalog.index
                    judged = [(d, part.judge(d, index, policy)) for d in wanted]
            except platformnamespaces.UNREADABLE_ERRORS as error:
                return _result(phase, self._unavailable(error))
        expected = [
            (
                download,
                verifier_container(
                    download.volume,
                    j.entry.spec.digest,
                    self.verifier_image,
                    j.entry.spec.hashing,
                    sub_path=download.sub_path or None,
                ),
            )
            for download, j in judged
            if j.entry is not None and j.finding is None
        ]
        if phase is gates.Phase.MUTATE:
            return gates.GateResult(
                patch=tuple(
                    podvolumes.init_container_ops(
                        template, [c for _, c in expected], compare=VERIFIER_FIELDS
                    )
                )
            )
        problems = [j.finding for _, j in judged if j.finding is not None]
        problems.extend(
            missing_verifiers(
                template,
                [(download.label, container) for download, container in expected],
                check=part.check,
                reason=part.verifier_missing,
                mode=policy.mode,
            )
        )
        return gates.GateResult(findings=tuple(findings.attributed(problems, deciding)))

    def _unavailable(self, error: BaseException) -> findings.Finding:
        return self._finding(self.part.registry_unavailable, self.part.registry_subject, str(error))

    def _finding(
        self,
        reason: str,
        subject: str,
        message: str,
        mode: findings.Mode = findings.Mode.ENFORCE,
    ) -> findings.Finding:
        return findings.Finding(
            check=self.part.check, reason=reason, subject=subject, message=message, mode=mode
        )


def _result(phase: gates.Phase, *found: findings.Finding) -> gates.GateResult:
    # Findings count only when validating; the mutating pass writes nothing it cannot justify.
    return gates.GateResult(findings=found if phase is gates.Phase.VALIDATE else ())
