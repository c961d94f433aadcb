"""The approved-model registry: ``Model`` and ``ModelPolicy`` specs, and the index the gate reads.

A ``Model`` names one model by its OpenSSF Model Signing root digest (the digest the init
container re-measures on the node), optionally by the OCI digest it is shipped as (image volumes,
KServe ``oci://`` modelcars), and carries what an AI-BOM needs: source, format, licence, datasets,
training provenance and model card. A ``ModelPolicy`` says which namespaces may only use approved
models and how strict that is. Both are validated here once (pydantic, unknown fields refused) and
their CRD schemas are generated from the same models. Everything here is pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pydantic
from pydantic import alias_generators

from muster.kernel import approved, denials, findings, licences, references, selectors
from muster.models.rules import provenance as attested
from muster.signatures.rules import oms, omsspecs

# Shared with Datasets, which are signed and verified the same way; re-exported under the old names.
from muster.signatures.rules.omsspecs import (
    DigestText,
    Keyless,
    SecretKeyRef,
    SignatureSpec,
    SourceText,
)

__all__ = [
    "COMPILED",
    "MODELS_ANNOTATION",
    "MODEL_PVC_KEY",
    "MODEL_VOLUMES_ANNOTATION",
    "SIGNATURE_VERIFIED",
    "USES_MODELS_LABEL",
    "Dataset",
    "Index",
    "Keyless",
    "ModelCard",
    "ModelEntry",
    "ModelPolicySpec",
    "ModelSpec",
    "SecretKeyRef",
    "SignatureSpec",
    "Training",
    "UnsafeSerialization",
    "decode_models_annotation",
    "encode_models_annotation",
    "parse_model",
    "signature_verified",
    "status_is_current",
]

# On pods, written by the mutating gate: which Models the pod uses (JSON list of {name, digest}),
# and a label so that the operator can find those pods with a label selector on revocation.
MODELS_ANNOTATION = "muster.dev/models"
USES_MODELS_LABEL = "muster.dev/uses-models"
# On pods: volumes whose bytes admission cannot see, declared as holding a Model.
MODEL_VOLUMES_ANNOTATION = "muster.dev/model-volumes"
# On PersistentVolumeClaims (label or annotation): the Model the claim holds.
MODEL_PVC_KEY = "muster.dev/model"
# The Model status condition the operator writes after checking the signature.
SIGNATURE_VERIFIED = omsspecs.SIGNATURE_VERIFIED
# The Model status condition that says whether the spec is valid (False: InvalidSpec, and why).
COMPILED = "Compiled"

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
    # Validators are built on first use: a command builds only those it validates with.
    defer_build=True,
)


class Dataset(pydantic.BaseModel):
    """A dataset the model was trained or fine-tuned on."""

    model_config = _CONFIG

    name: str = pydantic.Field(min_length=1)
    digest: str | None = None
    source: str | None = None
    license: str | None = None


class Training(pydantic.BaseModel):
    """Where the weights came from: base model, training configuration, framework."""

    model_config = _CONFIG

    base_model: str | None = None
    config_digest: DigestText | None = None
    framework: str | None = None


class ModelCard(pydantic.BaseModel):
    """Model card fields carried into the AI-BOM."""

    model_config = _CONFIG

    description: str | None = None
    authors: tuple[str, ...] = ()
    intended_use: str | None = None
    limitations: str | None = None
    task: str | None = None


class ModelSpec(pydantic.BaseModel):
    """One approved model."""

    model_config = _CONFIG

    digest: DigestText = pydantic.Field(description="OMS root digest, sha256:<hex>")
    oci_reference: str | None = pydantic.Field(
        default=None, description="OCI artifact/image holding the model, pinned by digest"
    )
    source: SourceText | None = pydantic.Field(
        default=None, description="where the weights come from, e.g. hf://org/name@rev"
    )
    format: str | None = pydantic.Field(default=None, description="safetensors, gguf, onnx, ...")
    license: str | None = pydantic.Field(
        default=None,
        description="SPDX licence expression, e.g. 'Apache-2.0' or 'LicenseRef-llama3.1'",
    )
    signature: SignatureSpec | None = None
    datasets: tuple[Dataset, ...] = ()
    training: Training | None = None
    card: ModelCard | None = None
    unsafe_serialization: bool = pydantic.Field(
        default=False, description="the model holds pickle-based files"
    )
    revoked: bool = False
    revocation_reason: str | None = None
    provenance: attested.ProvenanceSpec | None = pydantic.Field(
        default=None,
        description="a signed in-toto statement (e.g. SLSA provenance) over the OMS digest that "
        "the operator verifies; a ModelPolicy may require it",
    )

    @pydantic.model_validator(mode="after")
    def _provenance_found(self) -> ModelSpec:
        if (
            self.provenance is not None
            and self.provenance.bundle is None
            and not self.oci_reference
        ):
            raise ValueError(
                "provenance needs a bundle, or an ociReference whose referrers hold one"
            )
        return self

    @pydantic.field_validator("oci_reference")
    @classmethod
    def _pinned(cls, value: str | None) -> str | None:
        if value is not None and not references.parse(value).pinned:
            raise ValueError(f"ociReference {value!r} must be pinned by digest (@sha256:...)")
        return value

    @pydantic.field_validator("license")
    @classmethod
    def _spdx(cls, value: str | None) -> str | None:
        # Normalised once, so policies, BOMs and status read one spelling.
        return None if value is None else licences.validate(value)

    @property
    def oci_digest(self) -> str | None:
        return None if self.oci_reference is None else references.parse(self.oci_reference).digest

    @property
    def hashing(self) -> oms.Serialization:
        """How ``digest`` was hashed (algorithm, files or shards): as the Model's signature says,
        else model_signing's default (files, sha256). The node re-measures the same way; an
        unreadable signature falls back to the default, so the digest still decides."""
        return omsspecs.hashing_of(self.signature)


class UnsafeSerialization(pydantic.BaseModel):
    """Pickle-based models: refused, or allowed for the Models named in ``allow``."""

    model_config = _CONFIG

    action: Literal["refuse", "allow"] = "refuse"
    allow: tuple[str, ...] = ()


class ModelPolicySpec(pydantic.BaseModel):
    """Which namespaces may only use approved models, and how strictly."""

    model_config = _CONFIG

    namespace_selector: selectors.LabelSelector = pydantic.Field(
        default_factory=selectors.LabelSelector, description="namespaces it applies to (empty: all)"
    )
    mode: findings.Mode = findings.Mode.ENFORCE
    unsafe_serialization: UnsafeSerialization = pydantic.Field(default_factory=UnsafeSerialization)
    require_signature: bool = False
    require_provenance: bool = pydantic.Field(
        default=False, description="only Models whose provenance verified (ProvenanceVerified)"
    )
    licenses: licences.LicencePolicy = pydantic.Field(
        default_factory=licences.LicencePolicy,
        description="the licences a Model's spec.license may have (SPDX ids or patterns with *); "
        "a Model with no licence fails a non-empty allow list",
    )
    require_approved_datasets: bool = pydantic.Field(
        default=False,
        description="only Models whose spec.datasets all name registered Datasets (digest equal "
        "when given) with resolved lineage, signed when a DatasetPolicy requires it",
    )
    volumes: Literal["declared", "declaredOnly"] = pydantic.Field(
        default="declared",
        description="declaredOnly: every pod volume that can hold data must be a Model, a "
        "Dataset or a PVC labelled muster.dev/not-model-data=true",
    )
    denial: denials.DenialSpec | None = pydantic.Field(
        default=None,
        description="the policy's own message, help page and owner, shown with its denials",
    )
    # Set by approval.effective_policy: the licence rules of every policy selecting a namespace,
    # by policy name. Allow lists do not merge into one, so each must pass on its own.
    _licence_rules: tuple[tuple[str | None, licences.LicencePolicy], ...] | None = (
        pydantic.PrivateAttr(default=None)
    )

    @property
    def licence_rules(self) -> tuple[tuple[str | None, licences.LicencePolicy], ...]:
        """``(policy name, rules)`` a Model's licence must pass (name None: this policy)."""
        if self._licence_rules is not None:
            return self._licence_rules
        return () if self.licenses.empty else ((None, self.licenses),)

    def with_licence_rules(
        self, rules: Iterable[tuple[str | None, licences.LicencePolicy]]
    ) -> ModelPolicySpec:
        combined = self.model_copy()
        combined._licence_rules = tuple((name, r) for name, r in rules if not r.empty)
        return combined


@dataclasses.dataclass(frozen=True, slots=True)
class ModelEntry:
    """A Model as the gate sees it: its spec, whether its signature verified, and the
    provenance the operator verified for this spec (None: none verified)."""

    name: str
    spec: ModelSpec
    signature_verified: bool = False
    provenance: attested.Verified | None = None
    provenance_problem: str | None = None  # why it did not verify, for denials


@dataclasses.dataclass
class Index:
    """Models by name, OMS digest and OCI digest, and the ModelPolicies (in memory)."""

    models: dict[str, ModelEntry] = dataclasses.field(default_factory=dict)
    policies: dict[str, ModelPolicySpec] = dataclasses.field(default_factory=dict)
    invalid: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> why

    def put_model(self, entry: ModelEntry) -> None:
        self.invalid.pop(f"Model/{entry.name}", None)
        self.models[entry.name] = entry

    def put_policy(self, name: str, spec: ModelPolicySpec) -> None:
        self.invalid.pop(f"ModelPolicy/{name}", None)
        self.policies[name] = spec

    def by_name(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def by_digest(self, digest: str) -> list[ModelEntry]:
        return [m for m in self.models.values() if m.spec.digest == digest]

    def by_oci_digest(self, digest: str) -> list[ModelEntry]:
        return [m for m in self.models.values() if m.spec.oci_digest == digest]

    def policies_for(self, namespace_labels: Mapping[str, str]) -> list[ModelPolicySpec]:
        return list(self.named_policies_for(namespace_labels).values())

    def named_policies_for(self, namespace_labels: Mapping[str, str]) -> dict[str, ModelPolicySpec]:
        """The policies selecting a namespace with these labels, by name (in name order)."""
        return approved.named_policies_for(self.policies, namespace_labels)


# Shared with Datasets: the condition vouches for the spec at its observedGeneration only.
signature_verified = omsspecs.signature_verified


def status_is_current(status: object, generation: object) -> bool:
    """Whether the operator already wrote ``status`` for the spec at ``generation``: its
    ``observedGeneration`` and its SignatureVerified and Compiled conditions' all match (older
    operators wrote them without one, or no Compiled condition; such a status is rewritten)."""
    if not isinstance(status, Mapping) or status.get("observedGeneration") != generation:
        return False
    return all(
        any(
            isinstance(c, Mapping)
            and c.get("type") == kind
            and c.get("observedGeneration") == generation
            for c in status.get("conditions") or ()
        )
        for kind in (SIGNATURE_VERIFIED, COMPILED)
    )


def parse_model(
    name: str, spec: Mapping[str, Any], status: Mapping[str, Any], *, generation: object
) -> ModelEntry:
    """A Model object's spec and status as an index entry; raises pydantic's ValidationError.

    ``generation`` is the object's ``metadata.generation`` (see :func:`signature_verified`).
    """
    parsed = ModelSpec.model_validate(spec)
    verified = attested.verified_from_status(status, generation)
    return ModelEntry(
        name=name,
        spec=parsed,
        signature_verified=signature_verified(status, generation),
        # Only for the digest and requirement of this spec.
        provenance=verified
        if verified is not None
        and parsed.provenance is not None
        and verified.digest == parsed.digest
        else None,
        provenance_problem=attested.problem_from_status(status, generation)
        if parsed.provenance is not None
        else None,
    )


def encode_models_annotation(entries: Iterable[ModelEntry]) -> str:
    """The ``muster.dev/models`` annotation value: JSON list of ``{name, digest}``, sorted."""
    return approved.encode_uses((e.name, e.spec.digest) for e in entries)


# ``(name, digest)`` pairs from a pod's annotation; anything malformed yields nothing.
decode_models_annotation = approved.decode_uses
