"""Model provenance: an in-toto statement over the Model's OMS digest, signed and judged.

A ``Model`` may require provenance: a Sigstore bundle (as ``cosign attest-blob --hash`` or
GitHub's and GitLab's attest actions write it, the file kept beside the model) whose DSSE
envelope holds an in-toto statement. It counts only when one of the requirement's authorities
signed it, its subject names the Model's OMS root digest (a statement about other bytes proves
nothing about these), its predicate type is the required one, and every CEL condition holds.

The signature and statement checks are the image attestations' own
(:mod:`muster.signatures.rules.attestations`), the conditions the same CEL
(:mod:`muster.signatures.rules.conditions`). What verified is kept apart from what the Model
declares: builder, source and materials read from the verified predicate only, for the
Model's status and the AI-BOM's ``muster:verified:provenance:*`` properties.

Pure: the caller resolves the keys and trusted roots the spec names in Secrets and ConfigMaps
(:func:`sources`) and passes ``now``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic
from pydantic import alias_generators

from muster.models.rules import defaults
from muster.signatures.rules import attestations, authorities, keys, proofs, trust
from muster.signatures.rules import conditions as celconditions
from muster.signatures.rules import sources as authority_sources

__all__ = [
    "CONDITION_FAILED",
    "NOT_VERIFIED",
    "PROVENANCE_VERIFIED",
    "Material",
    "ProvenanceSpec",
    "Source",
    "Unverified",
    "Verified",
    "problem_from_status",
    "requirement",
    "sources",
    "verified_from_status",
    "verify",
    "verify_any",
]

# The Model status condition the operator writes after checking the provenance.
PROVENANCE_VERIFIED = "ProvenanceVerified"
SLSA_V1 = defaults.SLSA_V1
# Reasons of a ProvenanceVerified=False condition (the admission reason is the gate's).
NOT_VERIFIED = "ProvenanceNotVerified"
CONDITION_FAILED = "ProvenanceConditionFailed"
MAX_MATERIALS = 32

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
    # Validators are built on first use: a command builds only those it validates with.
    defer_build=True,
)


class AuthoritySpec(pydantic.BaseModel):
    """Who may have signed the provenance: a key or keyless identities (as ImagePolicy's)."""

    model_config = _CONFIG

    name: str | None = pydantic.Field(
        default=None, max_length=63, description="shown in messages; default authorities[i]"
    )
    key: authority_sources.PublicKeySource | None = None
    keyless: authority_sources.KeylessSpec | None = None

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> AuthoritySpec:
        if (self.key is None) == (self.keyless is None):
            raise ValueError("an authority is exactly one of key and keyless")
        return self


class ConditionSpec(pydantic.BaseModel):
    """A CEL expression over ``predicate``, ``statement`` and ``now`` that must be true."""

    model_config = _CONFIG

    name: str | None = pydantic.Field(
        default=None, max_length=63, description="shown in messages; default conditions[i]"
    )
    expression: str = pydantic.Field(min_length=1, max_length=4096)
    message: str | None = pydantic.Field(default=None, max_length=256)


class ProvenanceSpec(pydantic.BaseModel):
    """The provenance a Model must carry: an in-toto statement over its OMS digest, signed by
    one of ``authorities``, for which every condition holds."""

    model_config = _CONFIG

    bundle: str | None = pydantic.Field(
        default=None,
        min_length=2,
        description="the Sigstore bundle (JSON) holding the DSSE in-toto statement, e.g. "
        "what cosign attest-blob --hash <OMS digest> --bundle writes; without it, the bundles "
        "attached to the Model's ociReference as OCI referrers are read",
    )
    predicate_type: str = pydantic.Field(
        default=SLSA_V1,
        min_length=1,
        max_length=512,
        description="the statement's predicateType, or a cosign --type name (slsaprovenance1)",
    )
    authorities: tuple[AuthoritySpec, ...] = pydantic.Field(min_length=1, max_length=16)
    conditions: tuple[ConditionSpec, ...] = pydantic.Field(default=(), max_length=32)

    @pydantic.model_validator(mode="after")
    def _checked(self) -> ProvenanceSpec:
        names = [name for _, name in self.named_authorities()]
        if len(set(names)) != len(names):
            raise ValueError("authority names must be unique")
        self.compiled_conditions()
        return self

    def named_authorities(self) -> list[tuple[AuthoritySpec, str]]:
        return [
            (authority, authority.name or f"authorities[{index}]")
            for index, authority in enumerate(self.authorities)
        ]

    def compiled_conditions(self) -> tuple[celconditions.Condition, ...]:
        try:
            return tuple(
                celconditions.compile_condition(
                    condition.name or f"conditions[{index}]",
                    condition.expression,
                    condition.message,
                )
                for index, condition in enumerate(self.conditions)
            )
        except celconditions.InvalidCondition as error:
            raise ValueError(str(error)) from None

    @property
    def wanted_type(self) -> str:
        return attestations.predicate_type_of(self.predicate_type)


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """One key of a Secret or ConfigMap the spec reads (a public key, a trusted root)."""

    kind: Literal["Secret", "ConfigMap"]
    namespace: str
    name: str
    key: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} key {self.key!r}"


def _key_source(ref: authority_sources.SecretKeyRef) -> Source:
    return Source("Secret", ref.namespace, ref.name, ref.key)


def _root_source(ref: authority_sources.TrustedRootRef) -> Source:
    return Source(ref.kind, ref.namespace, ref.name, ref.key)


def sources(spec: ProvenanceSpec) -> list[Source]:
    """The Secret and ConfigMap keys the caller must read before :func:`requirement`."""
    found: list[Source] = []
    for authority, _ in spec.named_authorities():
        if authority.key is not None:
            if authority.key.secret_ref is not None:
                found.append(_key_source(authority.key.secret_ref))
            if authority.key.trusted_root is not None:
                found.append(_root_source(authority.key.trusted_root))
        elif authority.keyless is not None:
            found.append(_root_source(authority.keyless.trusted_root))
    return list(dict.fromkeys(found))


class Unverified(Exception):
    """Provenance that does not count: ``reason`` (a condition reason) and the sentence why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def requirement(spec: ProvenanceSpec, data: Mapping[Source, bytes]) -> celconditions.Requirement:
    """The spec compiled with its keys and roots (``data`` holds every :func:`sources` key);
    :class:`Unverified` when one cannot be used."""

    def read(source: Source, what: str) -> bytes:
        if source not in data:
            raise Unverified(NOT_VERIFIED, f"{what}: {source} was not found")
        return data[source]

    def root(ref: authority_sources.TrustedRootRef, what: str) -> trust.TrustedRoot:
        try:
            return trust.load_trusted_root(read(_root_source(ref), what))
        except trust.InvalidTrustRoot as error:
            raise Unverified(NOT_VERIFIED, f"{what}: trusted root is invalid: {error}") from None

    compiled: list[authorities.Authority] = []
    for authority, label in spec.named_authorities():
        what = f"provenance authority {label}"
        if authority.key is not None:
            source = authority.key
            pem = (
                source.data.encode()
                if source.data is not None
                else read(_key_source(source.secret_ref), what)  # type: ignore[arg-type]
            )
            try:
                key = keys.load(pem)
            except keys.InvalidKey as error:
                raise Unverified(NOT_VERIFIED, f"{what}: public key is invalid: {error}") from None
            log_root = root(source.trusted_root, what) if source.trusted_root else None
            compiled.append(authorities.KeyAuthority(name=label, key=key, trusted_root=log_root))
        elif authority.keyless is not None:
            compiled.append(
                authorities.KeylessAuthority(
                    name=label,
                    identities=tuple(i.identity() for i in authority.keyless.identities),
                    trusted_root=root(authority.keyless.trusted_root, what),
                )
            )
    return celconditions.Requirement(
        name="provenance",
        predicate_type=spec.wanted_type,
        authorities=tuple(compiled),
        conditions=spec.compiled_conditions(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Material:
    """An input of the build, as the verified predicate names it."""

    uri: str
    digest: str | None = None  # "<algorithm>:<value>", the first the predicate gives

    def to_json(self) -> dict[str, str]:
        return {"uri": self.uri, **({"digest": self.digest} if self.digest else {})}


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    """What the verified statement says: facts, not the Model's declarations."""

    digest: str
    predicate_type: str
    signer: str
    authority: str
    builder: str | None = None
    build_type: str | None = None
    source: str | None = None
    materials: tuple[Material, ...] = ()

    def to_status(self) -> dict[str, Any]:
        """``status.provenance`` of the Model."""
        status: dict[str, Any] = {
            "digest": self.digest,
            "predicateType": self.predicate_type,
            "signer": self.signer,
            "authority": self.authority,
            "materials": [m.to_json() for m in self.materials],
        }
        for key, value in (
            ("builder", self.builder),
            ("buildType", self.build_type),
            ("source", self.source),
        ):
            if value:
                status[key] = value
        return status

    def summary(self) -> str:
        built = f"built by {self.builder}" if self.builder else self.predicate_type
        source = f" from {self.source}" if self.source else ""
        return f"{built}{source}, signed by {self.signer}"


def verify_any(
    requirement_: celconditions.Requirement,
    bundles: Sequence[bytes | str],
    *,
    digest: str,
    now: datetime.datetime,
    where: str = "",
) -> Verified:
    """The first of ``bundles`` that counts (:func:`verify`); otherwise :class:`Unverified`
    with a failed condition first (it is the most telling), else every reason."""
    if not bundles:
        raise Unverified(NOT_VERIFIED, f"no provenance bundle found{where}")
    failures: list[Unverified] = []
    for bundle in bundles:
        try:
            return verify(requirement_, bundle, digest=digest, now=now)
        except Unverified as error:
            failures.append(error)
    failures.sort(key=lambda error: error.reason != CONDITION_FAILED)
    if len(failures) == 1:
        raise failures[0]
    said = "; ".join(f"bundle {i + 1}: {e.message}" for i, e in enumerate(failures[:4]))
    raise Unverified(failures[0].reason, f"{len(failures)} provenance bundles{where}: {said}")


def verify(
    requirement_: celconditions.Requirement,
    bundle: bytes | str,
    *,
    digest: str,
    now: datetime.datetime,
) -> Verified:
    """The facts of ``bundle``'s statement when it counts for the Model at ``digest``;
    otherwise :class:`Unverified` saying why (which authority refused, which condition failed
    and the value it read)."""
    raw = bundle.encode() if isinstance(bundle, str) else bundle
    item = attestations.BundleAttestation(raw)
    reasons: list[str] = []
    for authority in requirement_.authorities:
        try:
            attested = attestations.verify(item, digest=digest, authority=authority)
        except proofs.Inapplicable:
            continue
        except proofs.Rejected as error:
            reasons.append(f"{authority.name}: {error}")
            continue
        statement = attested.statement
        if statement.predicate_type != requirement_.predicate_type:
            raise Unverified(
                NOT_VERIFIED,
                f"the provenance statement is of predicate type {statement.predicate_type}, "
                f"not {requirement_.predicate_type}",
            )
        failed = celconditions.unmet(requirement_.conditions, statement, now)
        if failed:
            raise Unverified(
                CONDITION_FAILED,
                f"provenance signed by {attested.proof.signer}: {'; '.join(failed)}",
            )
        return _facts(statement, attested.proof, digest)
    signers = ", ".join(authorities.describe(a) for a in requirement_.authorities[:3])
    detail = "; ".join(reasons[:4]) or "no authority could check it"
    raise Unverified(
        NOT_VERIFIED,
        f"no provenance about {digest} signed by {signers}: {detail}",
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _get(document: object, *path: str) -> object:
    for name in path:
        if not isinstance(document, Mapping):
            return None
        document = document.get(name)
    return document


def _materials(entries: object) -> tuple[Material, ...]:
    if not isinstance(entries, list):
        return ()
    found: list[Material] = []
    for entry in entries[:MAX_MATERIALS]:
        uri = _text(_get(entry, "uri"))
        if uri is None:
            continue
        digests = _get(entry, "digest")
        digest = None
        if isinstance(digests, Mapping):
            pairs = [(k, v) for k, v in digests.items() if isinstance(k, str) and _text(v)]
            if pairs:
                digest = f"{pairs[0][0]}:{pairs[0][1]}"
        found.append(Material(uri, digest))
    return tuple(found)


def _facts(statement: attestations.Statement, proof: proofs.Proof, digest: str) -> Verified:
    """Builder, source and materials as SLSA v1 (GitHub's and GitLab's attest actions) and
    v0.2 (slsa-github-generator) name them; other predicates verify with none of them."""
    predicate = statement.predicate
    source: str | None = None
    if statement.predicate_type == SLSA_V1:
        materials = _materials(_get(predicate, "buildDefinition", "resolvedDependencies"))
        builder = _text(_get(predicate, "runDetails", "builder", "id"))
        build_type = _text(_get(predicate, "buildDefinition", "buildType"))
    elif statement.predicate_type == attestations.PREDICATE_TYPES["slsaprovenance02"]:
        materials = _materials(_get(predicate, "materials"))
        builder = _text(_get(predicate, "builder", "id"))
        build_type = _text(_get(predicate, "buildType"))
        # v0.2 names the repository the build definition came from.
        source = _text(_get(predicate, "invocation", "configSource", "uri"))
    else:
        materials, builder, build_type = (), None, None
    if source is None and materials:
        # Else the first material: the repository and commit the build checked out.
        source = materials[0].uri
    return Verified(
        digest=digest,
        predicate_type=statement.predicate_type,
        signer=proof.signer,
        authority=proof.authority,
        builder=builder,
        build_type=build_type,
        source=source,
        materials=materials,
    )


def problem_from_status(status: object, generation: object) -> str | None:
    """Why the provenance did not verify, as the operator wrote it for the spec at
    ``generation`` (None when it verified, or was not checked for this spec yet)."""
    if not isinstance(status, Mapping) or not isinstance(generation, int):
        return None
    for c in status.get("conditions") or ():
        if (
            isinstance(c, Mapping)
            and c.get("type") == PROVENANCE_VERIFIED
            and c.get("status") == "False"
            and c.get("observedGeneration") == generation
        ):
            return str(c.get("message") or c.get("reason") or "it did not verify")
    return None


def verified_from_status(status: object, generation: object) -> Verified | None:
    """The verified provenance a Model's status records, when its ProvenanceVerified condition
    is True for the spec at ``generation`` (a stale or forged status vouches for nothing)."""
    if not isinstance(status, Mapping) or not isinstance(generation, int) or generation < 1:
        return None
    current = any(
        isinstance(c, Mapping)
        and c.get("type") == PROVENANCE_VERIFIED
        and c.get("status") == "True"
        and c.get("observedGeneration") == generation
        for c in status.get("conditions") or ()
    )
    recorded = status.get("provenance")
    if not current or not isinstance(recorded, Mapping):
        return None
    listed = recorded.get("materials")
    materials = tuple(
        Material(uri, _text(entry.get("digest")))
        for entry in (listed if isinstance(listed, list) else ())[:MAX_MATERIALS]
        if isinstance(entry, Mapping) and (uri := _text(entry.get("uri"))) is not None
    )
    return Verified(
        digest=str(recorded.get("digest") or ""),
        predicate_type=str(recorded.get("predicateType") or ""),
        signer=str(recorded.get("signer") or ""),
        authority=str(recorded.get("authority") or ""),
        builder=_text(recorded.get("builder")),
        build_type=_text(recorded.get("buildType")),
        source=_text(recorded.get("source")),
        materials=materials,
    )
