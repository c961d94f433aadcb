"""Whether a Model's training data is still good: the Datasets its ``spec.datasets`` names,
and their lineage.

A revoked Dataset taints every Dataset derived from it, and every Model trained on any of them:
wherever a ModelPolicy selects the namespace such a Model is refused (ModelTrainingDataRevoked).
A ModelPolicy with ``requireApprovedDatasets`` asks more of each entry of ``spec.datasets``: it
names a registered Dataset (at the digest the entry gives, when it gives one) whose lineage
resolves and, where a DatasetPolicy selecting the namespace requires signatures, whose signature
verified (ModelTrainingDataNotApproved). Everything here is pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from muster.datasets.rules import lineage as datasetlineage
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import findings
from muster.models.rules import approval
from muster.models.rules import registry as modelregistry

__all__ = [
    "NOT_APPROVED",
    "REVOKED",
    "Revocation",
    "approval_problems",
    "judge_training",
    "revocations",
    "signatures_required",
    "trained_on",
]

REVOKED = "ModelTrainingDataRevoked"
NOT_APPROVED = "ModelTrainingDataNotApproved"


@dataclasses.dataclass(frozen=True, slots=True)
class Revocation:
    """One of a Model's training Datasets is revoked, itself or through an ancestor."""

    dataset: str  # as the Model's spec.datasets names it
    revoked: str  # the revoked Dataset: ``dataset`` itself, or its nearest revoked ancestor
    reason: str

    def describe(self) -> str:
        if self.revoked == self.dataset:
            return f"Dataset {self.dataset!r}, which is revoked: {self.reason}"
        return (
            f"Dataset {self.dataset!r}, which is revoked through lineage: its ancestor "
            f"{self.revoked!r} is revoked: {self.reason}"
        )


def revocations(
    spec: modelregistry.ModelSpec, datasets: datasetregistry.DatasetIndex
) -> list[Revocation]:
    """The Model's training Datasets that are revoked, in the order the Model names them.
    An entry naming no registered Dataset is not known to be revoked (see
    :func:`approval_problems` for what requireApprovedDatasets makes of it)."""
    found: list[Revocation] = []
    for entry in spec.datasets:
        if datasets.by_name(entry.name) is None:
            continue
        through = datasetlineage.revoked_through(entry.name, datasets)
        if through is not None:
            revoked, reason = through
            found.append(Revocation(entry.name, revoked, reason or "no reason given"))
    return found


def signatures_required(policies: Iterable[datasetregistry.DatasetPolicySpec]) -> bool:
    """Whether a DatasetPolicy selecting the namespace requires verified signatures."""
    return any(policy.require_signature for policy in policies)


def approval_problems(
    spec: modelregistry.ModelSpec,
    datasets: datasetregistry.DatasetIndex,
    *,
    signature_required: bool,
) -> list[tuple[str, str]]:
    """``(entry, what is wrong)`` for each of the Model's ``spec.datasets`` entries that is not
    an approved Dataset (revocation aside: :func:`revocations` names those)."""
    problems: list[tuple[str, str]] = []
    for entry in spec.datasets:
        dataset = datasets.by_name(entry.name)
        if dataset is None:
            invalid = datasets.invalid.get(f"Dataset/{entry.name}")
            problems.append(
                (
                    entry.name,
                    f"is a Dataset Muster refuses ({invalid})"
                    if invalid
                    else "names no registered Dataset (register the training data as a Dataset)",
                )
            )
            continue
        if entry.digest is not None and entry.digest != dataset.spec.digest:
            problems.append(
                (
                    entry.name,
                    f"gives digest {entry.digest}, but Dataset {entry.name!r} is "
                    f"{dataset.spec.digest}",
                )
            )
            continue
        unresolved = datasetlineage.problems(entry.name, datasets)
        if unresolved:
            problems.append((entry.name, "has unresolved lineage: " + "; ".join(unresolved)))
            continue
        if signature_required and not dataset.signature_verified:
            problems.append(
                (
                    entry.name,
                    f"names Dataset {entry.name!r}, which has no verified signature, and a "
                    "DatasetPolicy selecting this namespace requires one",
                )
            )
    return problems


def judge_training(
    match: approval.Match,
    datasets: datasetregistry.DatasetIndex,
    policy: modelregistry.ModelPolicySpec,
    *,
    dataset_signature_required: bool,
) -> approval.Match:
    """``match`` with a finding when the approved Model it matched was trained on revoked data,
    or (under requireApprovedDatasets) on data that is not approved. A match that already
    failed, or matched no Model, is returned as it is."""
    model = match.model
    if model is None or match.finding is not None:
        return match
    revoked = revocations(model.spec, datasets)
    if revoked:
        first = revoked[0]
        more = f" (and {len(revoked) - 1} more revoked Dataset(s))" if len(revoked) > 1 else ""
        return dataclasses.replace(
            match,
            finding=_finding(
                REVOKED,
                match.use.label,
                f"Model {model.name!r} was trained on {first.describe()}{more}; models trained "
                "on revoked data are refused: use a Model trained without it",
                policy.mode,
            ),
        )
    if policy.require_approved_datasets:
        problems = approval_problems(
            model.spec, datasets, signature_required=dataset_signature_required
        )
        if problems:
            listed = "; ".join(f"training dataset {name!r} {what}" for name, what in problems)
            return dataclasses.replace(
                match,
                finding=_finding(
                    NOT_APPROVED,
                    match.use.label,
                    f"Model {model.name!r} is trained on data that is not approved, and the "
                    f"ModelPolicy requires approved datasets: {listed}",
                    policy.mode,
                ),
            )
    return match


def trained_on(
    models: Mapping[str, modelregistry.ModelEntry], names: Iterable[str]
) -> dict[str, list[str]]:
    """Model name -> the entries of its ``spec.datasets`` among ``names``, for each Model
    trained on any of them (in name order)."""
    wanted = set(names)
    found: dict[str, list[str]] = {}
    for name, entry in sorted(models.items()):
        hits = [d.name for d in entry.spec.datasets if d.name in wanted]
        if hits:
            found[name] = hits
    return found


def _finding(reason: str, subject: str, message: str, mode: findings.Mode) -> findings.Finding:
    return findings.Finding(
        check=approval.CHECK, reason=reason, subject=subject, message=message, mode=mode
    )
