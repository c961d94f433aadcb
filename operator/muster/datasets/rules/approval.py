"""The dataset gate's decisions: which Datasets a pod template or a TrainJob uses, whether each
is approved under the DatasetPolicies selecting the namespace, and the init containers that
re-measure the data admission cannot see.

Four ways a workload uses a Dataset:

- an image volume (an OCI artifact) whose digest is some Dataset's ``ociReference`` digest, or
  that the pod annotation ``muster.dev/dataset-volumes`` declares as a Dataset;
- a PersistentVolumeClaim labelled or annotated ``muster.dev/dataset: <Dataset>``;
- any volume declared in ``muster.dev/dataset-volumes: '{"vol": "dataset"}'``;
- a Kubeflow TrainJob whose dataset initializer downloads a storage URI (``hf://``, ``s3://``
  ...): approved only when an approved Dataset lists that very source.

OCI data is content-addressed, so its digest decides at admission; PVCs and declared volumes
are re-measured on the node by the same ``muster model verify`` init container as models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from muster.datasets.rules import lineage
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import approved, findings, licences, podvolumes, references, sources, subjects
from muster.signatures.rules.verifiers import VERIFIER_FIELDS, verifier_container

__all__ = [
    "CHECK",
    "DatasetUse",
    "EffectivePolicy",
    "Match",
    "dataset_uses",
    "deciding_policy",
    "effective_policy",
    "image_volumes",
    "judge_use",
    "source_uses",
    "verifier_patch",
]

CHECK = "datasets"  # the check name in findings, Events and metrics
# KServe's init container that downloads models: a verifier goes after it, as the models' do.
STORAGE_INITIALIZER = "storage-initializer"
TRAINJOBS = ("trainer.kubeflow.org", "trainjobs")
# Kubeflow Trainer's dataset initializer: its container, so named by the runtimes, downloads
# the STORAGE_URI of its env in the pod the TrainJob's JobSet makes.
DATASET_INITIALIZER = "dataset-initializer"

UseKind = Literal["imageVolume", "pvc", "declaredVolume", "sourceUri"]


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetUse:
    """One Dataset a workload uses.

    ``reference`` is the OCI reference of an image volume, the Dataset name of a PVC or a
    declared volume, or the storage URI of a TrainJob's dataset initializer; ``declared`` the
    Dataset an image volume is declared as, if any; ``digest`` the image volume's digest (its
    own, or its tag resolved)."""

    kind: UseKind
    where: str  # volume name, or what downloads a storage URI
    reference: str
    claim: str | None = None  # the PVC behind a pvc or declared volume
    declared: str | None = None
    digest: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "imageVolume":
            return f'image volume "{self.where}"'
        if self.kind == "sourceUri":
            return f"storage URI of {self.where}"
        if self.claim is not None:
            return f'volume "{self.where}" (PVC "{self.claim}")'
        return f'volume "{self.where}"'


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """The outcome for one use: the Dataset it matched (if any) and what is wrong (if any)."""

    use: DatasetUse
    dataset: datasetregistry.DatasetEntry | None
    finding: findings.Finding | None

    @property
    def needs_verifier(self) -> bool:
        """Data admission cannot see: re-measured on the node before the workload starts.
        An image volume whose digest is the Dataset's own ``ociReference`` digest is the
        registered artifact already; a TrainJob's download is not in any pod Muster patches."""
        if self.dataset is None or self.finding is not None or self.use.kind == "sourceUri":
            return False
        if self.use.kind == "imageVolume":
            oci = self.dataset.spec.oci_digest
            return oci is None or oci != self.use.digest
        return True


@dataclasses.dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """Every DatasetPolicy selecting a namespace, combined strictest-wins; each policy's
    licence rules must pass on their own (allow lists are not intersected)."""

    mode: findings.Mode
    require_signature: bool
    licenses: tuple[licences.LicencePolicy, ...]
    volumes: Literal["declared", "declaredOnly"]


def effective_policy(
    policies: Sequence[datasetregistry.DatasetPolicySpec],
) -> EffectivePolicy | None:
    """The strictest combination of every policy selecting a namespace (None: no policy)."""
    if not policies:
        return None
    return EffectivePolicy(
        mode=approved.strictest_mode(policies),
        require_signature=any(p.require_signature for p in policies),
        licenses=tuple(p.licenses for p in policies),
        volumes="declaredOnly"
        if any(p.volumes == "declaredOnly" for p in policies)
        else "declared",
    )


def deciding_policy(
    policies: Mapping[str, datasetregistry.DatasetPolicySpec],
) -> findings.PolicyRef | None:
    """The DatasetPolicy the gate's findings are attributed to: of the policies selecting the
    namespace, the first by name in the strictest mode."""
    return approved.deciding_policy("DatasetPolicy", policies)


def _finding(
    reason: str, subject: str, message: str, mode: findings.Mode = findings.Mode.ENFORCE
) -> findings.Finding:
    return findings.Finding(check=CHECK, reason=reason, subject=subject, message=message, mode=mode)


# -- finding the uses -------------------------------------------------------------------------


def image_volumes(template: subjects.PodTemplate) -> dict[str, str]:
    """Volume name -> reference for every image volume (the gate resolves their tags: whether
    an image volume is a Dataset is known only from its digest)."""
    found: dict[str, str] = {}
    for volume in podvolumes.volumes(template.spec):
        image = volume.get("image")
        if isinstance(image, Mapping):
            reference = image.get("reference")
            found[volume["name"]] = reference if isinstance(reference, str) else ""
    return found


def declared_datasets(
    template: subjects.PodTemplate,
) -> tuple[dict[str, str], findings.Finding | None]:
    """The ``muster.dev/dataset-volumes`` annotation: volume name -> Dataset name."""
    raw = template.annotations.get(datasetregistry.DATASET_VOLUMES_ANNOTATION)
    if raw is None:
        return {}, None
    declared, problem = podvolumes.declared_volumes(
        raw, kind="Dataset", example='{"corpus": "wikipedia-2024"}'
    )
    if problem is None:
        return declared, None
    return {}, _finding(
        "DatasetVolumesInvalid",
        f"annotation {datasetregistry.DATASET_VOLUMES_ANNOTATION}",
        problem,
    )


def dataset_uses(
    template: subjects.PodTemplate,
    pvc_datasets: Mapping[str, str],
    index: datasetregistry.DatasetIndex,
    image_digests: Mapping[str, str | None],
    resolve_errors: Mapping[str, str] | None = None,
) -> tuple[list[DatasetUse], list[findings.Finding]]:
    """Every Dataset the template uses, and findings for what cannot be told.

    ``pvc_datasets`` maps claim names to the Dataset their ``muster.dev/dataset`` label or
    annotation names; ``image_digests`` maps image volume names to their digest (None: a tag
    that could not be resolved, for the reason in ``resolve_errors``). Both are looked up by
    the caller: claims live in the API, digests in registries.
    """
    errors = resolve_errors or {}
    uses: list[DatasetUse] = []
    problems: list[findings.Finding] = []
    volumes = {v["name"]: v for v in podvolumes.volumes(template.spec)}
    claims = podvolumes.pvc_claims(template)
    images = image_volumes(template)
    declared, problem = declared_datasets(template)
    if problem is not None:
        problems.append(problem)
    for volume_name, dataset_name in sorted(declared.items()):
        if volume_name not in volumes:
            problems.append(
                _finding(
                    "DatasetVolumeUnknown",
                    f'volume "{volume_name}"',
                    f"is declared in {datasetregistry.DATASET_VOLUMES_ANNOTATION} as Dataset "
                    f"{dataset_name!r} but the pod has no volume of that name",
                )
            )
    for name, reference in sorted(images.items()):
        digest = image_digests.get(name)
        if name in declared:
            uses.append(
                DatasetUse("imageVolume", name, reference, declared=declared[name], digest=digest)
            )
        elif digest is not None and index.by_oci_digest(digest):
            uses.append(DatasetUse("imageVolume", name, reference, digest=digest))
        elif digest is None and name in errors:
            # Unpinned and unresolvable: it may be a Dataset's artifact, so it is not let by.
            problems.append(
                _finding(
                    "DatasetReferenceUnresolved",
                    f'image volume "{name}"',
                    f"{reference!r} is not pinned by digest and could not be resolved "
                    f"({errors[name]}), so whether it is a Dataset cannot be told; pin it as "
                    "<reference>@sha256:<digest>",
                )
            )
    for volume_name, dataset_name in sorted(declared.items()):
        if volume_name in volumes and volume_name not in images:
            uses.append(
                DatasetUse(
                    "declaredVolume", volume_name, dataset_name, claim=claims.get(volume_name)
                )
            )
    for volume_name, claim in sorted(claims.items()):
        marked = pvc_datasets.get(claim)
        if volume_name not in declared and marked is not None:
            uses.append(DatasetUse("pvc", volume_name, marked, claim=claim))
    uses.extend(_initializer_uses(template))
    return uses, problems


def _initializer_uses(template: subjects.PodTemplate) -> list[DatasetUse]:
    """The URI a Trainer dataset initializer container downloads (its ``STORAGE_URI``)."""
    found: list[DatasetUse] = []
    for container in podvolumes.containers(template.spec):
        if container.get("name") != DATASET_INITIALIZER:
            continue
        env = container.get("env")
        for variable in env if isinstance(env, list) else ():
            if (
                isinstance(variable, Mapping)
                and variable.get("name") == "STORAGE_URI"
                and isinstance(variable.get("value"), str)
                and variable["value"]
            ):
                found.append(
                    DatasetUse("sourceUri", f'container "{DATASET_INITIALIZER}"', variable["value"])
                )
    return found


def source_uses(subject: subjects.Subject) -> list[DatasetUse]:
    """The storage URI a TrainJob's dataset initializer downloads, as a use."""
    if (subject.group, subject.resource) != TRAINJOBS:
        return []
    uri = sources.trainer_initializer_uris(subject.object).get("dataset")
    if not uri:
        return []
    return [DatasetUse("sourceUri", "the dataset initializer", uri)]


# -- judging ----------------------------------------------------------------------------------


def _oci_candidates(
    use: DatasetUse, index: datasetregistry.DatasetIndex, mode: findings.Mode
) -> tuple[list[datasetregistry.DatasetEntry], Match | None]:
    try:
        reference = references.parse(use.reference) if use.reference else None
    except references.InvalidReference as error:
        why = f"{use.reference!r} is not a valid OCI reference: {error}"
        return [], Match(use, None, _finding("DatasetReferenceInvalid", use.label, why, mode))
    if reference is None:
        return [], Match(
            use, None, _finding("DatasetReferenceInvalid", use.label, "has no reference", mode)
        )
    digest = reference.digest or use.digest
    if use.declared is None:
        # Found by its digest: the Datasets registered with that artifact.
        return index.by_oci_digest(digest or ""), None
    entry = index.by_name(use.declared)
    if entry is None:
        return [], None
    expected = entry.spec.oci_digest
    if expected is not None and digest is None:
        return [], Match(
            use,
            None,
            _finding(
                "DatasetReferenceUnresolved",
                use.label,
                f"{use.reference!r} is not pinned by digest and could not be resolved, so it "
                f"cannot be told to be Dataset {entry.name!r}; pin it as "
                "<reference>@sha256:<digest>",
                mode,
            ),
        )
    if expected is not None and digest != expected:
        return [], Match(
            use,
            None,
            _finding(
                "DatasetNotApproved",
                use.label,
                f"is declared as Dataset {entry.name!r}, whose ociReference has digest "
                f"{expected}, but {use.reference!r} is {digest}",
                mode,
            ),
        )
    return [entry], None


def judge_use(
    use: DatasetUse, index: datasetregistry.DatasetIndex, policy: EffectivePolicy
) -> Match:
    """Whether ``use`` is an approved Dataset under ``policy``: registered, neither revoked nor
    descended from a revoked Dataset, with a valid lineage, signed when required, and licensed
    as every selecting policy allows."""
    mode = policy.mode
    if use.kind == "imageVolume":
        candidates, refused = _oci_candidates(use, index, mode)
        if refused is not None:
            return refused
        if not candidates:
            named = f"Dataset {use.declared!r}" if use.declared else repr(use.reference)
            return Match(
                use,
                None,
                _finding(
                    "DatasetNotApproved",
                    use.label,
                    f"{named} is not a registered Dataset; register it or use an approved one",
                    mode,
                ),
            )
    elif use.kind == "sourceUri":
        try:
            sources.parse(use.reference)
        except sources.SourceError as error:
            return Match(
                use,
                None,
                _finding(
                    "DatasetReferenceInvalid",
                    use.label,
                    f"{use.reference!r} is not a valid source URI: {error}",
                    mode,
                ),
            )
        candidates = index.by_source(use.reference)
        if not candidates:
            return Match(
                use,
                None,
                _finding(
                    "DatasetNotApproved",
                    use.label,
                    f"{use.reference!r} is the source of no registered Dataset: only sources "
                    "listed in an approved Dataset's spec.sources may be downloaded here (an "
                    "hf:// source must be pinned with @<revision>)",
                    mode,
                ),
            )
    else:
        entry = index.by_name(use.reference)
        if entry is None:
            why = approved.not_registered("Dataset", use.reference, index.invalid)
            return Match(use, None, _finding("DatasetNotApproved", use.label, why, mode))
        candidates = [entry]
    return _judge_entries(use, candidates, index, policy)


def _judge_entries(
    use: DatasetUse,
    candidates: list[datasetregistry.DatasetEntry],
    index: datasetregistry.DatasetIndex,
    policy: EffectivePolicy,
) -> Match:
    mode = policy.mode
    revocations = {c.name: lineage.revoked_through(c.name, index) for c in candidates}
    usable = [c for c in candidates if revocations[c.name] is None]
    if not usable:
        entry = candidates[0]
        revoked = revocations[entry.name]
        assert revoked is not None  # noqa: S101 - every candidate is revoked here
        source, reason = revoked
        if source == entry.name:
            why = f"Dataset {entry.name!r} is revoked: {reason or 'no reason given'}"
        else:
            why = (
                f"Dataset {entry.name!r} is revoked through lineage: its ancestor {source!r} "
                f"is revoked: {reason or 'no reason given'}"
            )
        return Match(use, entry, _finding("DatasetRevoked", use.label, why, mode))
    problems = {c.name: lineage.problems(c.name, index) for c in usable}
    sound = [c for c in usable if not problems[c.name]]
    if not sound:
        entry = usable[0]
        return Match(
            use,
            entry,
            _finding(
                "DatasetLineageInvalid",
                use.label,
                f"Dataset {entry.name!r} has an invalid lineage: {'; '.join(problems[entry.name])}",
                mode,
            ),
        )
    if policy.require_signature:
        signed = [c for c in sound if c.signature_verified]
        if not signed:
            return Match(
                use,
                sound[0],
                _finding(
                    "DatasetSignatureNotVerified",
                    use.label,
                    f"Dataset {sound[0].name!r} has no verified signature and policy requires "
                    "one (sign the data with model_signing and give the bundle in "
                    "spec.signature)",
                    mode,
                ),
            )
        sound = signed
    refusal: tuple[datasetregistry.DatasetEntry, licences.LicenceVerdict] | None = None
    for entry in sound:
        verdict = next(
            (
                v
                for v in (licences.judge(entry.spec.license, rules) for rules in policy.licenses)
                if v is not None
            ),
            None,
        )
        if verdict is None:
            return Match(use, entry, None)
        refusal = refusal or (entry, verdict)
    assert refusal is not None  # noqa: S101 - sound is never empty here
    entry, verdict = refusal
    licensed = f"licensed {entry.spec.license!r}" if entry.spec.license else "given no licence"
    return Match(
        use,
        entry,
        _finding(
            "DatasetLicenseNotAllowed",
            use.label,
            f"Dataset {entry.name!r} is {licensed}: {verdict.licence} is not allowed "
            f"({verdict.rule})",
            mode,
        ),
    )


# -- mutation ---------------------------------------------------------------------------------


def verifier_patch(
    template: subjects.PodTemplate, matches: Sequence[Match], image: str
) -> list[dict[str, Any]]:
    """JSON patch ops: one verifier per dataset volume admission cannot see, plus the
    ``muster.dev/datasets`` annotation and ``muster.dev/uses-datasets`` label naming every
    matched Dataset (running pods are found by them when a Dataset is revoked)."""
    operations = podvolumes.init_container_ops(
        template,
        [
            verifier_container(m.use.where, m.dataset.spec.digest, image, m.dataset.spec.hashing)
            for m in matches
            if m.dataset is not None and m.needs_verifier
        ],
        compare=VERIFIER_FIELDS,
        after=STORAGE_INITIALIZER,
    )
    entries = [m.dataset for m in matches if m.dataset is not None]
    if entries:
        operations += podvolumes.metadata_ops(
            template,
            {
                "annotations": {
                    datasetregistry.DATASETS_ANNOTATION: datasetregistry.encode_datasets_annotation(
                        entries
                    )
                },
                "labels": {datasetregistry.USES_DATASETS_LABEL: "true"},
            },
        )
    return operations


def expected_verifiers(matches: Sequence[Match], image: str) -> list[tuple[Match, dict[str, Any]]]:
    """The verifier each approved dataset volume must have (checked when validating)."""
    return [
        (m, verifier_container(m.use.where, m.dataset.spec.digest, image, m.dataset.spec.hashing))
        for m in matches
        if m.dataset is not None and m.needs_verifier
    ]
