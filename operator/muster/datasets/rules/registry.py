"""The approved-dataset registry: ``Dataset`` and ``DatasetPolicy`` specs, and the index the
gates read.

A ``Dataset`` names one body of data by its OpenSSF Model Signing root digest (the digest the
verifier init container re-measures, the same way as for a Model), optionally by the OCI digest
it is shipped as and by the URIs it is downloaded from; it carries its SPDX licence, its lineage
(the Datasets it was derived from and how) and its OMS signature, and may be revoked. A
``DatasetPolicy`` says which namespaces may only use approved datasets and how strictly. Both are
validated here once (pydantic, unknown fields refused) and their CRD schemas are generated from
the same models. Everything here is pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import alias_generators

from muster.kernel import approved, denials, findings, licences, references, selectors, sources
from muster.signatures.rules import oms, omsspecs
from muster.signatures.rules.omsspecs import DigestText, SignatureSpec, SourceText

__all__ = [
    "COMPILED",
    "DATASETS_ANNOTATION",
    "DATASET_PVC_KEY",
    "DATASET_VOLUMES_ANNOTATION",
    "LINEAGE_RESOLVED",
    "SIGNATURE_VERIFIED",
    "USES_DATASETS_LABEL",
    "DatasetEntry",
    "DatasetIndex",
    "DatasetPolicySpec",
    "DatasetSpec",
    "Lineage",
    "Transformation",
    "decode_datasets_annotation",
    "encode_datasets_annotation",
    "parse_dataset",
]

# On PersistentVolumeClaims (label or annotation): the Dataset the claim holds.
DATASET_PVC_KEY = "muster.dev/dataset"
# On pods: volumes whose bytes admission cannot see, declared as holding a Dataset
# (JSON object {"volume": "dataset-name"}).
DATASET_VOLUMES_ANNOTATION = "muster.dev/dataset-volumes"
# On pods, written by the mutating gate: which Datasets the pod uses (JSON list of
# {name, digest}), and a label so that the operator finds those pods on revocation.
DATASETS_ANNOTATION = "muster.dev/datasets"
USES_DATASETS_LABEL = "muster.dev/uses-datasets"
# The Dataset status conditions the operator writes, once per generation.
COMPILED = "Compiled"
SIGNATURE_VERIFIED = omsspecs.SIGNATURE_VERIFIED
LINEAGE_RESOLVED = "LineageResolved"

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
    # Validators are built on first use: a command builds only those it validates with.
    defer_build=True,
)
# A Dataset is a cluster-scoped object: its name is a DNS subdomain.
_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
DatasetName = Annotated[str, pydantic.StringConstraints(pattern=_NAME)]


class Transformation(pydantic.BaseModel):
    """How this Dataset was made from its parents (each field optional)."""

    model_config = _CONFIG

    description: str | None = None
    code_reference: str | None = pydantic.Field(
        default=None, description="the code that made it, e.g. git+https://host/repo@<commit>"
    )
    digest: DigestText | None = pydantic.Field(
        default=None, description="digest of the transformation's code or configuration"
    )


class Lineage(pydantic.BaseModel):
    """The Datasets this one was derived from (by name) and how."""

    model_config = _CONFIG

    parents: tuple[DatasetName, ...] = pydantic.Field(
        default=(), description="names of the Datasets this one was derived from"
    )
    transformation: Transformation | None = None


class DatasetSpec(pydantic.BaseModel):
    """One approved dataset."""

    model_config = _CONFIG

    digest: DigestText = pydantic.Field(description="OMS root digest of the data, sha256:<hex>")
    oci_reference: str | None = pydantic.Field(
        default=None, description="OCI artifact/image holding the data, pinned by digest"
    )
    sources: tuple[SourceText, ...] = pydantic.Field(
        default=(), description="where the data is downloaded from, e.g. hf://datasets/org/name@rev"
    )
    license: str | None = pydantic.Field(default=None, description="SPDX licence expression")
    lineage: Lineage | None = None
    signature: SignatureSpec | None = None
    revoked: bool = False
    revocation_reason: str | None = None
    description: str | None = None

    @pydantic.field_validator("oci_reference")
    @classmethod
    def _pinned(cls, value: str | None) -> str | None:
        if value is not None and not references.parse(value).pinned:
            raise ValueError(f"ociReference {value!r} must be pinned by digest (@sha256:...)")
        return value

    @pydantic.field_validator("sources")
    @classmethod
    def _sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uri in value:
            sources.parse(uri)  # SourceError is a ValueError: the message says what is wrong
        return value

    @pydantic.field_validator("license")
    @classmethod
    def _licence(cls, value: str | None) -> str | None:
        if value is not None:
            licences.validate(value)  # LicenceError is a ValueError naming what is wrong
        return value

    @property
    def oci_digest(self) -> str | None:
        return None if self.oci_reference is None else references.parse(self.oci_reference).digest

    @property
    def parents(self) -> tuple[str, ...]:
        return () if self.lineage is None else tuple(self.lineage.parents)

    @property
    def hashing(self) -> oms.Serialization:
        """How ``digest`` was hashed, as the Dataset's signature says (see
        :func:`muster.signatures.rules.omsspecs.hashing_of`)."""
        return omsspecs.hashing_of(self.signature)


class DatasetPolicySpec(pydantic.BaseModel):
    """Which namespaces may only use approved datasets, and how strictly."""

    model_config = _CONFIG

    namespace_selector: selectors.LabelSelector = pydantic.Field(
        default_factory=selectors.LabelSelector, description="namespaces it applies to (empty: all)"
    )
    mode: findings.Mode = findings.Mode.ENFORCE
    require_signature: bool = pydantic.Field(
        default=False, description="only Datasets whose signature verified (SignatureVerified)"
    )
    licenses: licences.LicencePolicy = pydantic.Field(
        default_factory=licences.LicencePolicy,
        description="SPDX licences (or patterns with *) the datasets may carry",
    )
    volumes: Literal["declared", "declaredOnly"] = pydantic.Field(
        default="declared",
        description="declaredOnly: every volume that may hold data must be a declared model or "
        "dataset, or a PVC marked muster.dev/not-model-data",
    )
    denial: denials.DenialSpec | None = pydantic.Field(
        default=None,
        description="the policy's own message, help page and owner, shown with its denials",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetEntry:
    """A Dataset as the gates see it: its spec, and whether its signature verified."""

    name: str
    spec: DatasetSpec
    signature_verified: bool = False


@dataclasses.dataclass
class DatasetIndex:
    """Datasets by name, OMS digest, OCI digest and source, and the DatasetPolicies."""

    datasets: dict[str, DatasetEntry] = dataclasses.field(default_factory=dict)
    policies: dict[str, DatasetPolicySpec] = dataclasses.field(default_factory=dict)
    invalid: dict[str, str] = dataclasses.field(default_factory=dict)  # "Kind/name" -> why

    def put_dataset(self, entry: DatasetEntry) -> None:
        self.invalid.pop(f"Dataset/{entry.name}", None)
        self.datasets[entry.name] = entry

    def put_policy(self, name: str, spec: DatasetPolicySpec) -> None:
        self.invalid.pop(f"DatasetPolicy/{name}", None)
        self.policies[name] = spec

    def by_name(self, name: str) -> DatasetEntry | None:
        return self.datasets.get(name)

    def by_digest(self, digest: str) -> list[DatasetEntry]:
        return [d for d in self.datasets.values() if d.spec.digest == digest]

    def by_oci_digest(self, digest: str) -> list[DatasetEntry]:
        return [d for d in self.datasets.values() if d.spec.oci_digest == digest]

    def by_source(self, uri: str) -> list[DatasetEntry]:
        """The Datasets naming ``uri`` among their sources (canonical match, hf:// pinned)."""
        return [
            d
            for _, d in sorted(self.datasets.items())
            if any(sources.matches(approved, uri) for approved in d.spec.sources)
        ]

    def policies_for(self, namespace_labels: Mapping[str, str]) -> list[DatasetPolicySpec]:
        return list(self.named_policies_for(namespace_labels).values())

    def named_policies_for(
        self, namespace_labels: Mapping[str, str]
    ) -> dict[str, DatasetPolicySpec]:
        """The policies selecting a namespace with these labels, by name (in name order)."""
        return approved.named_policies_for(self.policies, namespace_labels)


def parse_dataset(
    name: str, spec: Mapping[str, Any], status: Mapping[str, Any], *, generation: object
) -> DatasetEntry:
    """A Dataset object's spec and status as an index entry; raises pydantic's ValidationError.

    ``generation`` is the object's ``metadata.generation``: the SignatureVerified condition
    counts only for the spec it was written for.
    """
    return DatasetEntry(
        name=name,
        spec=DatasetSpec.model_validate(spec),
        signature_verified=omsspecs.signature_verified(status, generation),
    )


def invalid_reason(error: Exception) -> str:
    """The Compiled condition's reason for a spec that does not validate: ``InvalidLicense``
    when its licence expression is what is wrong, else ``InvalidSpec``."""
    if isinstance(error, pydantic.ValidationError):
        first = error.errors()[0]
        if tuple(first.get("loc", ()))[:1] == ("license",):
            return "InvalidLicense"
    return "InvalidSpec"


def encode_datasets_annotation(entries: Iterable[DatasetEntry]) -> str:
    """The ``muster.dev/datasets`` annotation value: JSON list of ``{name, digest}``, sorted."""
    return approved.encode_uses((e.name, e.spec.digest) for e in entries)


# ``(name, digest)`` pairs from a pod's annotation; anything malformed yields nothing.
decode_datasets_annotation = approved.decode_uses
