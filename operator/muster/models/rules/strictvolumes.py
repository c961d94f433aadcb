"""Strict mode (``volumes: declaredOnly`` on a ModelPolicy or a DatasetPolicy): every pod volume
that can hold data is accounted for.

Without it, Muster judges what a pod declares: a Model or a Dataset in an image volume, a
marked PVC, a volume named in ``muster.dev/model-volumes`` or ``muster.dev/dataset-volumes``.
Weights in an unmarked PVC, a hostPath or an NFS share pass unseen. Under ``declaredOnly`` each
volume whose source can hold data (all but ``muster.kernel.datamarks.NON_DATA_VOLUME_SOURCES``)
must be one of:

* a model use the model gate judges here (a ModelPolicy selects the namespace), or an image
  volume whose digest is a registered Model's (content-addressed: the bytes are that Model's);
* a dataset use the dataset gate judges here (a DatasetPolicy selects the namespace: a PVC
  marked ``muster.dev/dataset``, a volume declared in ``muster.dev/dataset-volumes``), or an
  image volume whose digest is a registered Dataset's;
* a PVC labelled ``muster.dev/not-model-data=true`` (a label only namespace managers may set).

A declaration no gate judges counts for nothing: otherwise marking a PVC as a Dataset where no
DatasetPolicy verifies Datasets would let anything through. A missing PVC carries no mark.
Everything here is pure; the gate reads the PVCs and passes what their marks say.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from muster.datasets.rules import registry as datasetregistry
from muster.kernel import datamarks, findings, podvolumes, subjects
from muster.models.rules import approval
from muster.models.rules import registry as modelregistry

__all__ = [
    "NOT_DECLARED",
    "ClaimMarks",
    "Strictness",
    "claim_marks",
    "declared_datasets",
    "is_dataset_image",
    "source_kind",
    "strictness",
    "undeclared",
]

NOT_DECLARED = "VolumeNotDeclared"


@dataclasses.dataclass(frozen=True, slots=True)
class Strictness:
    """Strict mode applies: the policy it is attributed to, and its mode."""

    policy: findings.PolicyRef
    mode: findings.Mode


def strictness(
    model_policies: Mapping[str, modelregistry.ModelPolicySpec],
    dataset_policies: Mapping[str, datasetregistry.DatasetPolicySpec],
) -> Strictness | None:
    """Whether any policy selecting the namespace asks for declaredOnly (None: none does).
    Enforce wins over warn; findings name the first such policy in that mode, ModelPolicies
    before DatasetPolicies, each in name order."""
    strict: list[tuple[findings.PolicyRef, findings.Mode]] = [
        (findings.PolicyRef(kind="ModelPolicy", name=name, denial=spec.denial), spec.mode)
        for name, spec in sorted(model_policies.items())
        if spec.volumes == "declaredOnly"
    ] + [
        (findings.PolicyRef(kind="DatasetPolicy", name=name, denial=spec.denial), spec.mode)
        for name, spec in sorted(dataset_policies.items())
        if spec.volumes == "declaredOnly"
    ]
    if not strict:
        return None
    mode = (
        findings.Mode.ENFORCE
        if any(m is findings.Mode.ENFORCE for _, m in strict)
        else findings.Mode.WARN
    )
    policy = next(ref for ref, m in strict if m is mode)
    return Strictness(policy=policy, mode=mode)


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimMarks:
    """What a PersistentVolumeClaim's marks say (``exists`` False: there is no such claim)."""

    exists: bool = False
    model: str | None = None
    dataset: str | None = None
    not_model_data: bool = False


def _mark(metadata: Mapping[str, Any], key: str) -> str | None:
    # Label first, then annotation, as the model gate has always read muster.dev/model.
    for field in ("labels", "annotations"):
        items = metadata.get(field)
        value = items.get(key) if isinstance(items, Mapping) else None
        if isinstance(value, str) and value:
            return value
    return None


def claim_marks(pvc: Mapping[str, Any] | None) -> ClaimMarks:
    """The marks of a PVC object as the API returned it (None: it does not exist)."""
    if pvc is None:
        return ClaimMarks()
    metadata = pvc.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    labels = metadata.get("labels")
    # A label only: the namespace guard lets only namespace managers set it; an annotation
    # anyone who may edit the claim could write.
    flag = labels.get(datamarks.NOT_MODEL_DATA_LABEL) if isinstance(labels, Mapping) else None
    return ClaimMarks(
        exists=True,
        model=_mark(metadata, modelregistry.MODEL_PVC_KEY),
        dataset=_mark(metadata, datasetregistry.DATASET_PVC_KEY),
        not_model_data=flag == "true",
    )


def _declared(template: subjects.PodTemplate, annotation: str) -> dict[str, str]:
    # A malformed annotation declares nothing here; the gate of its kind reports it.
    declared, _ = podvolumes.declared_volumes(
        template.annotations.get(annotation), kind="object", example=""
    )
    return declared


def declared_datasets(template: subjects.PodTemplate) -> dict[str, str]:
    """Volume -> Dataset, as the pod's ``muster.dev/dataset-volumes`` declares them."""
    if template.annotations.get(datasetregistry.DATASET_VOLUMES_ANNOTATION) is None:
        return {}
    return _declared(template, datasetregistry.DATASET_VOLUMES_ANNOTATION)


def is_dataset_image(
    digest: str | None,
    models: modelregistry.Index,
    datasets: datasetregistry.DatasetIndex,
) -> bool:
    """Whether an image volume at ``digest`` holds a registered Dataset (and no Model): then it
    is a dataset use, not a model use."""
    return (
        digest is not None
        and not models.by_oci_digest(digest)
        and bool(datasets.by_oci_digest(digest))
    )


def source_kind(volume: Mapping[str, Any]) -> str:
    """The volume's source, as the pod spec names it: hostPath, nfs, csi, ephemeral, ..."""
    return next((key for key in volume if key != "name"), "unknown")


def undeclared(
    template: subjects.PodTemplate,
    strict: Strictness,
    *,
    covered: Collection[str],
    claims: Mapping[str, ClaimMarks],
    models_judged: bool,
    datasets_judged: bool,
) -> list[findings.Finding]:
    """A VolumeNotDeclared finding for each data volume that is none of the above.

    ``covered``: volumes already accounted for as model or dataset uses (see the module's
    docstring); ``claims``: claim name -> its marks, for every PVC the template mounts that
    could be read (one that could not has its own finding already).
    """
    datasets = declared_datasets(template)
    models = _declared(template, modelregistry.MODEL_VOLUMES_ANNOTATION)
    pvcs = podvolumes.pvc_claims(template)
    found: list[findings.Finding] = []
    for volume in podvolumes.volumes(template.spec):
        name = volume["name"]
        kind = source_kind(volume)
        if kind in datamarks.NON_DATA_VOLUME_SOURCES or name in covered:
            continue
        claim = pvcs.get(name)
        if claim is not None and claim not in claims:
            continue
        marks = claims[claim] if claim is not None else None
        if marks is not None and marks.not_model_data:
            continue
        dataset = datasets.get(name) or (marks.dataset if marks else None)
        if dataset is not None and datasets_judged:
            continue
        model = models.get(name) or (marks.model if marks else None)
        hint = ""
        if marks is not None and not marks.exists:
            hint = f'; PVC "{claim}" does not exist, and a missing claim carries no mark'
        elif model is not None and not models_judged:
            hint = (
                f"; it is declared as Model {model!r}, but no ModelPolicy selects this namespace, "
                "so nothing verifies it"
            )
        elif dataset is not None:
            hint = (
                f"; it is declared as Dataset {dataset!r}, but no DatasetPolicy selects this "
                "namespace, so nothing verifies it"
            )
        what = f'volume "{name}"' + (f' (PVC "{claim}")' if claim is not None else "")
        found.append(
            findings.Finding(
                check=approval.CHECK,
                reason=NOT_DECLARED,
                subject=what,
                message=f"is a volume of kind {kind} that is neither an approved Model, a "
                f"Dataset nor a PVC labelled {datamarks.NOT_MODEL_DATA_LABEL}=true, and "
                f"{strict.policy} admits only declared data volumes (volumes: declaredOnly){hint}: "
                "declare it in "
                f"{modelregistry.MODEL_VOLUMES_ANNOTATION} or "
                f"{datasetregistry.DATASET_VOLUMES_ANNOTATION}, or have a namespace manager label "
                "its PVC",
                mode=strict.mode,
                policy=strict.policy,
            )
        )
    return found
