"""The model gate's decisions: which models a pod mounts, whether each is approved, and the
init containers that re-verify the bytes admission cannot see.

Four ways a pod uses a model: an image volume (``volumes[].image.reference``), a KServe
``oci://`` storage URI (the ``STORAGE_URI`` env of a container, or a ``storage-uri``
annotation), a PersistentVolumeClaim labelled ``muster.dev/model: <Model>``, and a volume
declared in the pod annotation ``muster.dev/model-volumes: '{"vol": "model"}'``. OCI models are
content-addressed, so the digest decides at admission; PVCs and declared volumes are verified on
the node by an init container running ``muster model verify`` before any workload container.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from muster.kernel import approved, findings, licences, podvolumes, references, sources, subjects
from muster.models.rules import registry as modelregistry
from muster.models.rules import storageuris
from muster.signatures.rules.verifiers import (
    MOUNT_ROOT,
    VERIFIER_FIELDS,
    VERIFIER_PREFIX,
    hashing_args,
    verifier_container,
    verifier_name,
)

__all__ = [
    "CHECK",
    "MOUNT_ROOT",
    "VERIFIER_FIELDS",
    "VERIFIER_PREFIX",
    "Match",
    "ModelUse",
    "deciding_policy",
    "effective_policy",
    "hashing_args",
    "judge_use",
    "model_uses",
    "pvc_claims",
    "verifier_container",
    "verifier_name",
    "verifier_patch",
]

CHECK = "models"  # the check name in findings, Events and metrics
STORAGE_INITIALIZER = "storage-initializer"  # KServe's init container that downloads models
OCI_SCHEME = "oci://"

# sourceUri: an hf://, s3://, gs://, http(s):// storage URI an initializer downloads
# (models/rules/storageuris.py).
UseKind = Literal["imageVolume", "storageUri", "pvc", "declaredVolume", "sourceUri"]


@dataclasses.dataclass(frozen=True, slots=True)
class ModelUse:
    """One model a pod template uses; ``reference`` is an OCI reference or a Model name."""

    kind: UseKind
    where: str  # volume name, or container name for a storage URI
    reference: str
    claim: str | None = None  # the PVC behind a pvc or declared volume
    # sourceUri: the volume the initializer downloads into (None: none to re-measure), and
    # whether the use is the download itself (a Trainer model-initializer: nothing to wait for).
    volume: str | None = None
    fetcher: bool = False

    @property
    def label(self) -> str:
        if self.kind == "imageVolume":
            return f'image volume "{self.where}"'
        if self.kind == "storageUri":
            return f'storage URI of "{self.where}"'
        if self.kind == "sourceUri":
            return f"model source {self.reference!r} ({self.where})"
        if self.claim is not None:
            return f'volume "{self.where}" (PVC "{self.claim}")'
        return f'volume "{self.where}"'

    @property
    def is_oci(self) -> bool:
        return self.kind in ("imageVolume", "storageUri")

    @property
    def needs_verifier(self) -> bool:
        """Bytes admission cannot see: verified on the node before the workload starts."""
        return not self.is_oci and not self.fetcher

    @property
    def verifier_volume(self) -> str | None:
        """The volume the verifier re-measures (None: nothing to mount)."""
        if not self.needs_verifier:
            return None
        return self.volume if self.kind == "sourceUri" else self.where


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """The outcome for one use: the Model it matched (if any) and what is wrong (if anything)."""

    use: ModelUse
    model: modelregistry.ModelEntry | None
    finding: findings.Finding | None


pvc_claims = podvolumes.pvc_claims


def model_uses(
    template: subjects.PodTemplate, pvc_models: Mapping[str, str]
) -> tuple[list[ModelUse], list[findings.Finding]]:
    """Every model the template uses, and findings for declarations that make no sense.

    ``pvc_models`` maps claim names to the Model their ``muster.dev/model`` label or annotation
    names (looked up by the caller: claims live in the API, not in the pod).
    """
    uses: list[ModelUse] = []
    problems: list[findings.Finding] = []
    volumes = {v["name"]: v for v in podvolumes.volumes(template.spec)}
    claims = pvc_claims(template)
    for name, volume in volumes.items():
        image = volume.get("image")
        if isinstance(image, Mapping):
            reference = image.get("reference")
            uses.append(
                ModelUse("imageVolume", name, reference if isinstance(reference, str) else "")
            )
    for container in podvolumes.containers(template.spec):
        env = container.get("env")
        for variable in env if isinstance(env, list) else ():
            if (
                isinstance(variable, Mapping)
                and variable.get("name") == "STORAGE_URI"
                and isinstance(variable.get("value"), str)
                and variable["value"].startswith(OCI_SCHEME)
            ):
                uses.append(
                    ModelUse(
                        "storageUri",
                        str(container.get("name", "?")),
                        variable["value"][len(OCI_SCHEME) :],
                    )
                )
    for key, value in sorted(template.annotations.items()):
        if (
            key.lower().endswith(("storage-uri", "storageuri"))
            and isinstance(value, str)
            and value.startswith(OCI_SCHEME)
        ):
            uses.append(ModelUse("storageUri", f"annotation {key}", value[len(OCI_SCHEME) :]))
    declared: dict[str, str] = {}
    raw = template.annotations.get(modelregistry.MODEL_VOLUMES_ANNOTATION)
    if raw is not None:
        declared, problem = _declared(raw)
        if problem is not None:
            problems.append(problem)
    for volume_name, model_name in sorted(declared.items()):
        if volume_name not in volumes:
            problems.append(
                _finding(
                    "ModelVolumeUnknown",
                    f'volume "{volume_name}"',
                    f"is declared in {modelregistry.MODEL_VOLUMES_ANNOTATION} as Model "
                    f"{model_name!r} but the pod has no volume of that name",
                )
            )
            continue
        uses.append(
            ModelUse("declaredVolume", volume_name, model_name, claim=claims.get(volume_name))
        )
    for volume_name, claim in sorted(claims.items()):
        pvc_model = pvc_models.get(claim)
        if volume_name not in declared and pvc_model is not None:
            uses.append(ModelUse("pvc", volume_name, pvc_model, claim=claim))
    for ref in storageuris.source_refs(template.annotations, podvolumes.containers(template.spec)):
        uses.append(
            ModelUse("sourceUri", ref.where, ref.uri, volume=ref.volume, fetcher=ref.fetcher)
        )
    return uses, problems


def _declared(raw: object) -> tuple[dict[str, str], findings.Finding | None]:
    declared, problem = podvolumes.declared_volumes(
        raw, kind="Model", example='{"weights": "llama-3-8b"}'
    )
    if problem is None:
        return declared, None
    return {}, _finding(
        "ModelVolumesInvalid", f"annotation {modelregistry.MODEL_VOLUMES_ANNOTATION}", problem
    )


def _finding(
    reason: str, subject: str, message: str, mode: findings.Mode = findings.Mode.ENFORCE
) -> findings.Finding:
    return findings.Finding(check=CHECK, reason=reason, subject=subject, message=message, mode=mode)


def effective_policy(
    policies: Sequence[modelregistry.ModelPolicySpec] | Mapping[str, modelregistry.ModelPolicySpec],
) -> modelregistry.ModelPolicySpec | None:
    """The strictest combination of every policy selecting a namespace (None: no policy).

    Licence rules do not merge: every policy's ``licenses`` is kept (with its name when the
    policies are given by name) and a Model's licence must pass each."""
    named: list[tuple[str | None, modelregistry.ModelPolicySpec]] = (
        sorted(policies.items()) if isinstance(policies, Mapping) else [(None, p) for p in policies]
    )
    policies = [spec for _, spec in named]
    if not policies:
        return None
    refusing = [p for p in policies if p.unsafe_serialization.action == "refuse"]
    if refusing:
        unsafe = modelregistry.UnsafeSerialization(action="refuse")
    else:
        allowed = set.intersection(*(set(p.unsafe_serialization.allow) for p in policies))
        unsafe = modelregistry.UnsafeSerialization(action="allow", allow=tuple(sorted(allowed)))
    combined = modelregistry.ModelPolicySpec(
        mode=approved.strictest_mode(policies),
        unsafe_serialization=unsafe,
        require_signature=any(p.require_signature for p in policies),
        require_provenance=any(p.require_provenance for p in policies),
        require_approved_datasets=any(p.require_approved_datasets for p in policies),
        volumes="declaredOnly"
        if any(p.volumes == "declaredOnly" for p in policies)
        else "declared",
    )
    return combined.with_licence_rules((name, p.licenses) for name, p in named)


def deciding_policy(
    policies: Mapping[str, modelregistry.ModelPolicySpec],
) -> findings.PolicyRef | None:
    """The ModelPolicy the gate's findings are attributed to: of the policies selecting the
    namespace (combined by :func:`effective_policy`), the first by name in the strictest mode."""
    return approved.deciding_policy("ModelPolicy", policies)


def judge_use(
    use: ModelUse,
    index: modelregistry.Index,
    policy: modelregistry.ModelPolicySpec,
    *,
    oci_digest: str | None = None,
    resolve_error: str | None = None,
) -> Match:
    """Whether ``use`` is an approved, non-revoked Model under ``policy``.

    For OCI uses the caller passes the digest the reference names (its own, or the one the
    registry resolved a tag to) or why it could not be resolved.
    """
    mode = policy.mode
    if use.is_oci:
        if not use.reference:
            return Match(
                use, None, _finding("ModelReferenceInvalid", use.label, "has no reference", mode)
            )
        try:
            reference = references.parse(use.reference)
        except references.InvalidReference as error:
            return Match(
                use,
                None,
                _finding(
                    "ModelReferenceInvalid",
                    use.label,
                    f"{use.reference!r} is not a valid OCI reference: {error}",
                    mode,
                ),
            )
        digest = reference.digest or oci_digest
        if digest is None:
            why = f" ({resolve_error})" if resolve_error else ""
            return Match(
                use,
                None,
                _finding(
                    "ModelReferenceUnresolved",
                    use.label,
                    f"{use.reference!r} is not pinned by digest and could not be resolved{why}; "
                    "pin it as <reference>@sha256:<digest>",
                    mode,
                ),
            )
        candidates = index.by_oci_digest(digest)
        shown = use.reference if reference.digest else f"{use.reference} ({digest})"
        if not candidates:
            return Match(
                use,
                None,
                _finding(
                    "ModelNotApproved",
                    use.label,
                    f"{shown!r} is not an approved Model: no Model has ociReference with "
                    f"digest {digest}; register it (muster model register) or use an approved one",
                    mode,
                ),
            )
    elif use.kind == "sourceUri":
        matched, problem = _by_source(use, index, mode)
        if problem is not None:
            return Match(use, None, problem)
        candidates = matched
    else:
        entry = index.by_name(use.reference)
        if entry is None:
            why = approved.not_registered("Model", use.reference, index.invalid)
            return Match(use, None, _finding("ModelNotApproved", use.label, why, mode))
        candidates = [entry]
    usable = [c for c in candidates if not c.spec.revoked]
    if not usable:
        revoked = candidates[0]
        reason = revoked.spec.revocation_reason or "no reason given"
        return Match(
            use,
            revoked,
            _finding(
                "ModelRevoked",
                use.label,
                f"Model {revoked.name!r} ({use.reference}) is revoked: {reason}",
                mode,
            ),
        )
    if policy.require_signature:
        signed = [c for c in usable if c.signature_verified]
        if not signed:
            return Match(
                use,
                usable[0],
                _finding(
                    "ModelSignatureNotVerified",
                    use.label,
                    f"Model {usable[0].name!r} has no verified signature and policy requires one "
                    "(sign it with model_signing, then muster model register it with the "
                    "signature)",
                    mode,
                ),
            )
        usable = signed
    if policy.require_provenance:
        attested = [c for c in usable if c.provenance is not None]
        if not attested:
            return Match(
                use,
                usable[0],
                _finding(
                    "ModelProvenanceNotVerified",
                    use.label,
                    f"Model {usable[0].name!r} has no verified provenance and policy requires "
                    f"one: {_provenance_state(usable[0])}",
                    mode,
                ),
            )
        usable = attested
    entry = usable[0]
    unsafe = policy.unsafe_serialization
    if entry.spec.unsafe_serialization and (
        unsafe.action == "refuse" or entry.name not in unsafe.allow
    ):
        return Match(
            use,
            entry,
            _finding(
                "ModelUnsafeSerialization",
                use.label,
                f"Model {entry.name!r} uses pickle-based serialization, which policy refuses "
                "(convert it to safetensors, or allow it in the ModelPolicy)",
                mode,
            ),
        )
    licence = _licence_finding(use, entry, policy)
    if licence is not None:
        return Match(use, entry, licence)
    return Match(use, entry, None)


def _by_source(
    use: ModelUse, index: modelregistry.Index, mode: findings.Mode
) -> tuple[list[modelregistry.ModelEntry], findings.Finding | None]:
    """The Models whose spec.source is the URI a pod downloads; hf:// must name a revision."""
    try:
        source = sources.parse(use.reference)
    except sources.SourceError as error:
        return [], _finding("ModelReferenceInvalid", use.label, str(error), mode)
    if not source.pinned:
        return [], _finding(
            "ModelSourceNotPinned",
            use.label,
            f"{use.reference!r} names no revision, so what it downloads can change at any time; "
            f"pin it ({source.text}@<commit>) to the revision an approved Model names",
            mode,
        )
    matched = storageuris.approved(use.reference, index.models.values())
    if not matched:
        return [], _finding(
            "ModelNotApproved",
            use.label,
            f"{source.text!r} is not an approved Model: no Model has spec.source {source.text!r}; "
            "register it with that source (muster model register) or use an approved one",
            mode,
        )
    return matched, None


# -- mutation ---------------------------------------------------------------------------------


def verifier_patch(
    template: subjects.PodTemplate,
    matches: Sequence[Match],
    image: str,
    *,
    add_verifiers: bool = True,
) -> list[dict[str, Any]]:
    """JSON patch ops: one verifier per model volume admission cannot see (after KServe's
    storage-initializer when present, otherwise first), plus the ``muster.dev/models``
    annotation and ``muster.dev/uses-models`` label naming every matched Model."""
    operations: list[dict[str, Any]] = []
    if add_verifiers:
        operations += podvolumes.init_container_ops(
            template,
            [
                verifier_container(
                    m.use.verifier_volume, m.model.spec.digest, image, m.model.spec.hashing
                )
                for m in matches
                if m.model is not None and m.finding is None and m.use.verifier_volume
            ],
            compare=VERIFIER_FIELDS,
            after=STORAGE_INITIALIZER,
        )
    entries = [m.model for m in matches if m.model is not None]
    if entries:
        value = modelregistry.encode_models_annotation(entries)
        operations += podvolumes.metadata_ops(
            template,
            {
                "annotations": {modelregistry.MODELS_ANNOTATION: value},
                "labels": {modelregistry.USES_MODELS_LABEL: "true"},
            },
        )
    return operations


def _provenance_state(entry: modelregistry.ModelEntry) -> str:
    if entry.spec.provenance is None:
        return (
            "the Model names none (attest its OMS digest, e.g. cosign attest-blob --hash, and "
            "give the bundle in spec.provenance)"
        )
    if entry.provenance_problem:
        return entry.provenance_problem
    return "its provenance has not been verified for this spec yet (ProvenanceVerified)"


def _licence_finding(
    use: ModelUse, entry: modelregistry.ModelEntry, policy: modelregistry.ModelPolicySpec
) -> findings.Finding | None:
    """ModelLicenseNotAllowed when a selecting policy's licence rules refuse the Model's
    licence; every policy's rules must pass (the first refusing one, by name, is named)."""
    for name, rules in policy.licence_rules:
        verdict = licences.judge(entry.spec.license, rules)
        if verdict is None:
            continue
        by = f"ModelPolicy {name!r}" if name is not None else "the ModelPolicy"
        return _finding(
            "ModelLicenseNotAllowed",
            use.label,
            f"Model {entry.name!r} is not allowed by {by}: {verdict.message} (use a Model "
            "whose licence the policy allows, or change the policy's licenses)",
            policy.mode,
        )
    return None
