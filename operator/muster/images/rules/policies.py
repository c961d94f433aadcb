"""The ``ImagePolicy`` spec and the decision it makes about one image digest.

A policy names the images it covers (glob patterns over the normalised ``registry/repository``
name: ``*`` stays inside one path segment, ``**`` crosses them, ``?`` is one character), the
namespaces it applies to (a Kubernetes label selector), the authorities it trusts (public keys
or keyless identities with a trusted root, or Notation trust stores and identities) and how many
of them must vouch for an image, whichever format each signed in.

Everything here is pure. A policy is validated once (:func:`parse_spec`), the Secrets and
ConfigMaps it refers to are fetched by the caller (:func:`sources_of` says which), and
:func:`compile_policy` parses keys and trusted roots once into a :class:`CompiledPolicy`.
:func:`judge` then decides from :class:`Evidence` (signature manifests and bundles the caller
fetched from the registry) whether an image digest passes; nothing passes by default.

An image that no policy applying to its namespace covers is not admitted for being pinned:
:func:`uncovered_mode` says what happens to it (``deny`` by default, ``warn`` or ``allow`` by
the operator's setting or the namespace label :data:`UNCOVERED_LABEL`) and
:func:`uncovered_message` says why, naming the patterns that do exist. What a platform cannot
sign is let in by name with a ``static`` authority (``{static: {action: pass}}``): still
pinned, and reported every time (:data:`PASSED_UNSIGNED`).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import pydantic
from cryptography import x509
from pydantic import alias_generators

from muster.images.rules import scanrules
from muster.images.rules.uncovered import UNCOVERED_LABEL, Uncovered
from muster.kernel import denials, messages, observations, references, selectors
from muster.signatures.rules import (
    attestations,
    authorities,
    conditions,
    formats,
    keys,
    notation,
    sources,
    trust,
)

__all__ = [
    "DEFAULT_TRUSTED_ROOT_KEY",
    "DISALLOWED",
    "NOT_COVERED",
    "PASSED_UNSIGNED",
    "UNCOVERED_LABEL",
    "Authority",
    "CompiledPolicy",
    "Decision",
    "Evidence",
    "ImagePolicySpec",
    "InvalidImagePolicy",
    "Source",
    "StaticSpec",
    "Uncovered",
    "compile_glob",
    "compile_policy",
    "describe",
    "expected_signers",
    "judge",
    "judge_static",
    "matching",
    "parse_spec",
    "sources_of",
    "uncovered_message",
    "uncovered_mode",
]

DEFAULT_TRUSTED_ROOT_KEY = sources.DEFAULT_TRUSTED_ROOT_KEY
DEFAULT_TRUST_STORE_KEY = "ca.crt"

# Reasons (findings, Events, metrics) of the rules below.
NOT_COVERED = "ImageNotCovered"  # no ImagePolicy applying to the namespace covers the image
PASSED_UNSIGNED = observations.PASSED_UNSIGNED  # admitted unsigned by a static pass
DISALLOWED = "ImageDisallowed"  # refused by a static fail
MAX_PATTERNS_SHOWN = 8  # in a denial message; the rest are counted

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
    # Validators are built on first use: a command builds only those it validates with.
    defer_build=True,
)
DnsName = sources.DnsName
KeyName = sources.KeyName
# The authority source types ImagePolicy shares with a Model's provenance.
SecretKeyRef = sources.SecretKeyRef
TrustedRootRef = sources.TrustedRootRef
PublicKeySource = sources.PublicKeySource
IdentitySpec = sources.IdentitySpec
KeylessSpec = sources.KeylessSpec


class InvalidImagePolicy(ValueError):
    """A policy that cannot be compiled; the message says which field and why."""


# ---------------------------------------------------------------------------------------------
# The spec


class TrustStoreRef(pydantic.BaseModel):
    """A Notation trust store: PEM root certificates (of signers, or of TSAs) in a ConfigMap
    or Secret."""

    model_config = _CONFIG

    kind: Literal["ConfigMap", "Secret"] = "ConfigMap"
    namespace: DnsName
    name: DnsName
    key: KeyName = DEFAULT_TRUST_STORE_KEY


Action = Literal["enforce", "log", "skip"]


class OverrideSpec(pydantic.BaseModel):
    """Checks moved from the level's default to enforce, log or skip (never integrity)."""

    model_config = _CONFIG

    authenticity: Action | None = None
    authentic_timestamp: Action | None = None
    expiry: Action | None = None
    revocation: Action | None = None

    def actions(self) -> dict[notation.Check, Action]:
        given = {
            notation.Check.AUTHENTICITY: self.authenticity,
            notation.Check.AUTHENTIC_TIMESTAMP: self.authentic_timestamp,
            notation.Check.EXPIRY: self.expiry,
            notation.Check.REVOCATION: self.revocation,
        }
        return {check: action for check, action in given.items() if action is not None}


class SignatureVerificationSpec(pydantic.BaseModel):
    """Notation's signatureVerification: a level (strict, permissive or audit; an ImagePolicy
    that verifies nothing is a static pass authority, not a skip level) and overrides."""

    model_config = _CONFIG

    level: Literal["strict", "permissive", "audit"] = "strict"
    override: OverrideSpec = pydantic.Field(default_factory=OverrideSpec)
    verify_timestamp: Literal["always", "afterCertExpiry"] = pydantic.Field(
        default="always",
        description="with tsaTrustStores: verify the timestamp always, or only once a "
        "certificate of the signing chain has expired",
    )


class NotationSpec(pydantic.BaseModel):
    """Notation (Notary Project) signatures, judged as a Notation trust policy: the envelopes'
    certificate chains must lead to a CA of the trust stores and the signing certificate's
    subject must match a trusted identity; the ImagePolicy's images are its registry scopes."""

    model_config = _CONFIG

    trust_stores: tuple[TrustStoreRef, ...] = pydantic.Field(min_length=1, max_length=8)
    trusted_identities: tuple[str, ...] = pydantic.Field(
        min_length=1,
        max_length=32,
        description="'x509.subject: C=..., ST=..., O=...' (a subset of the signing certificate's "
        "subject) or '*'",
    )
    tsa_trust_stores: tuple[TrustStoreRef, ...] = pydantic.Field(
        default=(),
        max_length=8,
        description="TSA root certificates (Notation trust stores of type tsa): with any, "
        "signatures must carry an RFC 3161 timestamp they verify, and a certificate expired "
        "since the timestamp still counts",
    )
    signature_verification: SignatureVerificationSpec = pydantic.Field(
        default_factory=SignatureVerificationSpec
    )

    @pydantic.model_validator(mode="after")
    def _identities(self) -> NotationSpec:
        identities = self.trusted_identities
        if "*" in identities and len(identities) > 1:
            raise ValueError("'*' must be the only trusted identity")
        for identity in identities:
            if identity != "*":
                try:
                    notation.parse_identity(identity)
                except notation.InvalidTrustPolicy as error:
                    raise ValueError(str(error)) from None
        return self


class StaticSpec(pydantic.BaseModel):
    """A decision by name, without signatures: ``pass`` admits the covered images unsigned
    (still pinned, and reported as ``ImagePassedUnsigned``), ``fail`` refuses them."""

    model_config = _CONFIG

    action: Literal["pass", "fail"]


class Authority(pydantic.BaseModel):
    """One party whose signature counts (a key or a keyless identity), or a static decision."""

    model_config = _CONFIG

    name: str | None = pydantic.Field(
        default=None, max_length=63, description="shown in messages; default authorities[i]"
    )
    key: PublicKeySource | None = None
    keyless: KeylessSpec | None = None
    notation: NotationSpec | None = None
    static: StaticSpec | None = pydantic.Field(
        default=None,
        description="pass or fail the covered images without looking for signatures; "
        "must be the policy's only authority",
    )

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Authority:
        kinds = (self.key, self.keyless, self.notation, self.static)
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError("an authority is exactly one of key, keyless, notation and static")
        return self


class ConditionSpec(pydantic.BaseModel):
    """A CEL expression over ``predicate``, ``statement`` and ``now`` that must be true."""

    model_config = _CONFIG

    name: str | None = pydantic.Field(
        default=None, max_length=63, description="shown in denials; default conditions[i]"
    )
    expression: str = pydantic.Field(min_length=1, max_length=4096)
    message: str | None = pydantic.Field(
        default=None, max_length=256, description="what the condition means, for a denial"
    )


class AttestationSpec(pydantic.BaseModel):
    """An in-toto attestation the images must carry, who must have signed it, and conditions
    over its predicate."""

    model_config = _CONFIG

    name: str = pydantic.Field(min_length=1, max_length=63)
    predicate_type: str = pydantic.Field(
        min_length=1,
        max_length=512,
        description="the statement's predicateType, or a cosign --type name (slsaprovenance1, "
        "slsaprovenance02, cyclonedx, spdxjson, vuln, openvex, custom)",
    )
    authorities: tuple[Authority, ...] = pydantic.Field(
        min_length=1,
        max_length=16,
        description="keys or keyless identities; a statement signed by one of them counts",
    )
    conditions: tuple[ConditionSpec, ...] = pydantic.Field(default=(), max_length=32)

    @pydantic.model_validator(mode="after")
    def _checked(self) -> AttestationSpec:
        if any(a.key is None and a.keyless is None for a in self.authorities):
            raise ValueError("attestation authorities are keys or keyless identities")
        names = [name for _, name in self.named_authorities()]
        if len(set(names)) != len(names):
            raise ValueError("authority names must be unique")
        for condition, name in self.named_conditions():
            try:
                conditions.compile_condition(name, condition.expression)
            except conditions.InvalidCondition as error:
                raise ValueError(str(error)) from None
        return self

    def named_authorities(self) -> list[tuple[Authority, str]]:
        return [
            (authority, authority.name or f"authorities[{index}]")
            for index, authority in enumerate(self.authorities)
        ]

    def named_conditions(self) -> list[tuple[ConditionSpec, str]]:
        return [
            (condition, condition.name or f"conditions[{index}]")
            for index, condition in enumerate(self.conditions)
        ]


class ImagePolicySpec(pydantic.BaseModel):
    """Which images must be signed by whom, in which namespaces."""

    model_config = _CONFIG

    images: tuple[Annotated[str, pydantic.StringConstraints(min_length=1)], ...] = pydantic.Field(
        min_length=1,
        description="glob patterns over registry/repository, e.g. ghcr.io/acme/**",
    )
    namespace_selector: selectors.LabelSelector | None = pydantic.Field(
        default=None, description="namespaces the policy applies to (default: every judged one)"
    )
    mode: Literal["enforce", "warn"] = "enforce"
    authorities: tuple[Authority, ...] = pydantic.Field(min_length=1)
    threshold: int | None = pydantic.Field(
        default=None, ge=1, description="how many distinct authorities must sign (default 1)"
    )
    pin_digests: bool = pydantic.Field(
        default=True, description="rewrite tags to repo:tag@sha256:... at admission"
    )
    vulnerabilities: scanrules.VulnerabilityRules | None = pydantic.Field(
        default=None,
        description="known vulnerabilities the covered images may carry (from ImageScans)",
    )
    denial: denials.DenialSpec | None = pydantic.Field(
        default=None,
        description="the policy's own message, help page and owner, shown with its denials",
    )
    attestations: tuple[AttestationSpec, ...] = pydantic.Field(
        default=(),
        max_length=16,
        description="in-toto attestations (SLSA provenance, SBOMs, ...) the images must carry, "
        "signed by their authorities, with CEL conditions over the predicate",
    )

    @pydantic.field_validator("images")
    @classmethod
    def _globs(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            compile_glob(value)
        return values

    @pydantic.model_validator(mode="after")
    def _threshold(self) -> ImagePolicySpec:
        if self.threshold is not None and self.threshold > len(self.authorities):
            raise ValueError(
                f"threshold {self.threshold} is more than the {len(self.authorities)} authorities"
            )
        # A static decision mixed with signers would make the threshold meaningless.
        if len(self.authorities) > 1 and any(a.static is not None for a in self.authorities):
            raise ValueError("a static authority must be the policy's only authority")
        names = [name for _, name in self.named_authorities()]
        if len(set(names)) != len(names):
            raise ValueError("authority names must be unique")
        if self.attestations and any(a.static is not None for a in self.authorities):
            raise ValueError("a static authority admits by name: it cannot require attestations")
        attestation_names = [attestation.name for attestation in self.attestations]
        if len(set(attestation_names)) != len(attestation_names):
            raise ValueError("attestation names must be unique")
        return self

    def named_authorities(self) -> list[tuple[Authority, str]]:
        return [
            (authority, authority.name or f"authorities[{index}]")
            for index, authority in enumerate(self.authorities)
        ]


def _first_error(error: pydantic.ValidationError) -> str:
    problems = []
    for item in error.errors()[:3]:
        where = ".".join(str(part) for part in item["loc"]) or "spec"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def parse_spec(data: object) -> ImagePolicySpec:
    """Validate a spec, or raise :class:`InvalidImagePolicy` naming the field."""
    if not isinstance(data, Mapping):
        raise InvalidImagePolicy("spec must be an object")
    try:
        return ImagePolicySpec.model_validate(dict(data))
    except pydantic.ValidationError as error:
        raise InvalidImagePolicy(_first_error(error)) from None


# ---------------------------------------------------------------------------------------------
# Matching


def compile_glob(pattern: str) -> re.Pattern[str]:
    """``*`` within a path segment, ``**`` across segments, ``?`` one character; over the
    pattern normalised as image references are (:func:`references.normalise_pattern`)."""
    if any(ch.isspace() for ch in pattern) or len(pattern) > 512:
        raise ValueError(f"image pattern {pattern!r} is not a valid glob")
    pattern = references.normalise_pattern(pattern)
    parts = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts))


# ---------------------------------------------------------------------------------------------
# Compilation


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """A Secret or ConfigMap key a policy needs; the caller fetches its bytes."""

    kind: Literal["ConfigMap", "Secret"]
    namespace: str
    name: str
    key: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} key {self.key!r}"


def _source(ref: SecretKeyRef | TrustedRootRef | TrustStoreRef) -> Source:
    kind: Literal["ConfigMap", "Secret"] = "Secret" if isinstance(ref, SecretKeyRef) else ref.kind
    return Source(kind=kind, namespace=ref.namespace, name=ref.name, key=ref.key)


def sources_of(spec: ImagePolicySpec) -> tuple[Source, ...]:
    """Every Secret/ConfigMap key the policy refers to, each once, in a stable order."""
    found: dict[Source, None] = {}
    every = spec.authorities + tuple(a for att in spec.attestations for a in att.authorities)
    for authority in every:
        if authority.key is not None:
            if authority.key.secret_ref is not None:
                found[_source(authority.key.secret_ref)] = None
            if authority.key.trusted_root is not None:
                found[_source(authority.key.trusted_root)] = None
        if authority.keyless is not None:
            found[_source(authority.keyless.trusted_root)] = None
        if authority.notation is not None:
            for store in (*authority.notation.trust_stores, *authority.notation.tsa_trust_stores):
                found[_source(store)] = None
    return tuple(found)


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    generation: int
    images: tuple[re.Pattern[str], ...]
    namespace_selector: selectors.LabelSelector | None
    mode: Literal["enforce", "warn"]
    authorities: tuple[authorities.Authority, ...]
    threshold: int
    pin_digests: bool
    patterns: tuple[str, ...] = ()
    vulnerabilities: scanrules.VulnerabilityRules | None = None
    static: Literal["pass", "fail"] | None = None  # a static authority decides by name alone
    denial: denials.DenialSpec | None = None
    attestations: tuple[conditions.Requirement, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        """What a cached decision is valid for: a new generation invalidates it."""
        return (self.name, self.generation)

    def covers(self, reference: references.ImageReference) -> bool:
        return any(pattern.fullmatch(reference.name) for pattern in self.images)

    def applies_to(self, namespace_labels: Mapping[str, str]) -> bool:
        return selectors.matches(self.namespace_selector, namespace_labels)


@dataclasses.dataclass
class _Roots:
    """Each trusted root parsed once per compilation, whatever formats verify against it."""

    materials: Mapping[Source, bytes]
    loaded: dict[Source, trust.TrustedRoot] = dataclasses.field(default_factory=dict)

    def data(self, source: Source, what: str) -> bytes:
        data = self.materials.get(source)
        if data is None:
            raise InvalidImagePolicy(f"{what}: {source} was not found")
        return data

    def load(self, ref: TrustedRootRef, what: str) -> trust.TrustedRoot:
        source = _source(ref)
        if source not in self.loaded:
            data = self.data(source, what)
            try:
                root = trust.load_trusted_root(data)
                _ = root.material  # legacy signatures need it: refuse such a root now, once
            except trust.InvalidTrustRoot as error:
                raise InvalidImagePolicy(f"{what}: {source}: {error}") from None
            self.loaded[source] = root
        return self.loaded[source]


def compile_policy(
    name: str,
    generation: int,
    spec: ImagePolicySpec,
    materials: Mapping[Source, bytes],
) -> CompiledPolicy:
    """Parse every key and trusted root once; raise :class:`InvalidImagePolicy` saying why not."""
    roots = _Roots(materials)
    compiled: list[authorities.Authority] = []
    static: Literal["pass", "fail"] | None = None
    for authority, label in spec.named_authorities():
        if authority.static is not None:
            static = authority.static.action
        else:
            compiled.append(_authority(authority, label, roots, f"authority {label}"))
    return CompiledPolicy(
        name=name,
        generation=generation,
        images=tuple(compile_glob(pattern) for pattern in spec.images),
        namespace_selector=spec.namespace_selector,
        mode=spec.mode,
        authorities=tuple(compiled),
        threshold=spec.threshold or 1,
        pin_digests=spec.pin_digests,
        patterns=spec.images,
        vulnerabilities=spec.vulnerabilities,
        static=static,
        denial=spec.denial,
        attestations=tuple(_requirement(attestation, roots) for attestation in spec.attestations),
    )


def _authority(authority: Authority, label: str, roots: _Roots, what: str) -> authorities.Authority:
    """A key, keyless or Notation authority of the spec, its key and roots parsed."""
    if authority.key is not None:
        source = authority.key
        pem = (
            source.data.encode()
            if source.data is not None
            else roots.data(_source(source.secret_ref), what)  # type: ignore[arg-type]
        )
        try:
            key = keys.load(pem)
        except keys.InvalidKey as error:
            raise InvalidImagePolicy(f"{what}: public key is invalid: {error}") from None
        root = roots.load(source.trusted_root, what) if source.trusted_root else None
        return authorities.KeyAuthority(name=label, key=key, trusted_root=root)
    if authority.keyless is not None:
        identities = tuple(identity.identity() for identity in authority.keyless.identities)
        return authorities.KeylessAuthority(
            name=label,
            identities=identities,
            trusted_root=roots.load(authority.keyless.trusted_root, what),
        )
    if authority.notation is not None:
        return _notation_authority(label, authority.notation, roots, what)
    raise InvalidImagePolicy(f"{what}: a static authority signs nothing")


def _requirement(spec: AttestationSpec, roots: _Roots) -> conditions.Requirement:
    what = f"attestation {spec.name}"
    try:
        compiled = tuple(
            conditions.compile_condition(name, condition.expression, condition.message)
            for condition, name in spec.named_conditions()
        )
    except conditions.InvalidCondition as error:
        raise InvalidImagePolicy(f"{what}: {error}") from None
    return conditions.Requirement(
        name=spec.name,
        predicate_type=attestations.predicate_type_of(spec.predicate_type),
        authorities=tuple(
            _authority(authority, label, roots, f"{what} authority {label}")
            for authority, label in spec.named_authorities()
        ),
        conditions=compiled,
    )


def _notation_authority(
    label: str, spec: NotationSpec, roots: _Roots, what: str
) -> authorities.NotationAuthority:
    def load(refs: Sequence[TrustStoreRef], kind: str) -> tuple[notation.TrustStore, ...]:
        stores = []
        for ref in refs:
            source = _source(ref)
            data = roots.data(source, what)  # outside the try: a missing store says so plainly
            try:
                certificates = x509.load_pem_x509_certificates(data)
            except ValueError as error:
                raise InvalidImagePolicy(
                    f"{what}: {kind} {source} is not PEM certificates: {messages.first_line(error)}"
                ) from None
            stores.append(notation.TrustStore(f"{ref.namespace}/{ref.name}", tuple(certificates)))
        return tuple(stores)

    verification = spec.signature_verification
    try:
        policy = notation.TrustPolicy(
            name=label,
            trust_stores=load(spec.trust_stores, "trust store"),
            trusted_identities=spec.trusted_identities,
            level=notation.Level(verification.level),
            overrides=verification.override.actions(),
            tsa_stores=load(spec.tsa_trust_stores, "TSA trust store"),
            verify_timestamp=verification.verify_timestamp,
        )
    except notation.InvalidTrustPolicy as error:
        raise InvalidImagePolicy(f"{what}: {error}") from None
    return authorities.NotationAuthority(name=label, policy=policy)


# ---------------------------------------------------------------------------------------------
# Judging


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    """What the registry holds about one digest; ``error`` when it could not be read."""

    digest: str
    signatures: tuple[formats.Found, ...] = ()  # by format, the format fetched last first
    problems: tuple[str, ...] = ()  # signature artifacts that were unreadable
    error: str | None = None
    # For an index: evidence of each platform manifest (cosign signs either or both).
    platforms: tuple[tuple[str, Evidence], ...] = ()
    is_index: bool = False
    # In-toto attestations found for the digest (fetched only for policies that require
    # some), and the time their conditions' ``now`` is.
    attestations: tuple[attestations.Item, ...] = ()
    now: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """Whether one policy admits one digest, with the one-line reason when it does not."""

    passed: bool
    reason: str  # CamelCase, stable
    message: str
    signers: tuple[str, ...] = ()
    # What admitting authorities only logged (a Notation audit level): shown as warnings.
    warnings: tuple[str, ...] = ()


def expected_signers(policy: CompiledPolicy) -> str:
    """Whom the policy trusts, for the person whose image was refused: each authority's name
    and its key fingerprint or keyless identity (never key material)."""
    signers = ", ".join(authorities.describe(authority) for authority in policy.authorities[:3])
    if len(policy.authorities) > 3:
        signers += f" and {len(policy.authorities) - 3} more"
    count = f"{policy.threshold} of " if policy.threshold > 1 else ""
    return f"{count}{signers}"


def _judge_one(policy: CompiledPolicy, evidence: Evidence) -> Decision:
    if evidence.error is not None:
        # Muster refuses what it could not check; the registry's own error says why.
        return Decision(
            False,
            "SignatureLookupFailed",
            f"{evidence.error}; retry once the registry answers "
            "(muster image verify makes the same lookup)",
        )
    if not any(found.items for found in evidence.signatures):
        extra = f" ({'; '.join(evidence.problems)})" if evidence.problems else ""
        reason = "SignatureInvalid" if evidence.problems else "ImageNotSigned"
        return Decision(
            False,
            reason,
            f"no signature found for {evidence.digest}{extra}; "
            f"it must be signed ({_signing_hint(policy)}) by {expected_signers(policy)}",
        )
    outcomes = [
        authorities.outcome(
            authority.name,
            formats.attempts(evidence.signatures, digest=evidence.digest, authority=authority),
        )
        for authority in policy.authorities
    ]
    result = authorities.threshold(outcomes, policy.threshold)
    attested = ""
    if result.passed and policy.attestations:
        if evidence.now is None:
            raise ValueError("attestation conditions need the time of the check")
        verdict = conditions.judge(
            policy.attestations, evidence.attestations, digest=evidence.digest, now=evidence.now
        )
        if not verdict.passed:
            return Decision(False, verdict.reason, verdict.message, signers=result.satisfied)
        attested = f"; attested: {', '.join(verdict.verified)}"
    if result.passed:
        warnings = tuple(
            f"{outcome.authority}: {warning}"
            for outcome in outcomes
            if outcome.verified is not None
            for warning in outcome.verified.warnings
        )
        return Decision(
            True,
            "Verified",
            result.message + attested,
            signers=result.satisfied,
            warnings=warnings,
        )
    return Decision(
        False,
        "SignatureNotTrusted",
        f"{result.message}; it must be signed ({_signing_hint(policy)}) by "
        f"{expected_signers(policy)}",
    )


def judge_static(policy: CompiledPolicy) -> Decision | None:
    """The decision of a static authority, which needs no evidence; None for signers."""
    if policy.static == "pass":
        return Decision(
            True,
            PASSED_UNSIGNED,
            f"no signature needed: ImagePolicy {policy.name!r} passes the images it covers "
            "(static pass)",
        )
    if policy.static == "fail":
        return Decision(
            False,
            DISALLOWED,
            f"ImagePolicy {policy.name!r} refuses every image it covers (static fail)",
        )
    return None


def _signing_hint(policy: CompiledPolicy) -> str:
    """The command that makes the signatures the policy's authorities accept."""
    notation_ = [isinstance(a, authorities.NotationAuthority) for a in policy.authorities]
    if all(notation_):
        return "notation sign"
    return "cosign sign or notation sign" if any(notation_) else "cosign sign"


def judge(policy: CompiledPolicy, evidence: Evidence) -> Decision:
    """Does ``policy`` admit the image whose registry evidence this is?

    A signature on the digest itself counts (for an index: on the index). Otherwise, for an
    index, every platform manifest must pass on its own: the node may pull any of them.
    """
    static = judge_static(policy)
    if static is not None:
        return static
    direct = _judge_one(policy, evidence)
    if direct.passed or not evidence.is_index or evidence.error is not None:
        return direct
    if not evidence.platforms:
        return direct
    signers: list[str] = []
    warnings: list[str] = []
    for platform, platform_evidence in evidence.platforms:
        decision = _judge_one(policy, platform_evidence)
        if not decision.passed:
            # A platform signed but not attested: its attestation is what is missing.
            attesting = decision.reason in (conditions.MISSING, conditions.CONDITION_FAILED)
            return Decision(
                False,
                decision.reason if attesting else direct.reason,
                f"{direct.message}; and platform {platform} "
                f"({platform_evidence.digest}): {decision.message}",
            )
        signers.extend(decision.signers)
        warnings.extend(f"platform {platform}: {warning}" for warning in decision.warnings)
    return Decision(
        True,
        "Verified",
        f"every platform manifest is signed ({len(evidence.platforms)})",
        signers=tuple(dict.fromkeys(signers)),
        warnings=tuple(warnings),
    )


def describe(policy: CompiledPolicy) -> dict[str, Any]:
    """A summary for logs and the CLI (no key material)."""
    return {
        "name": policy.name,
        "generation": policy.generation,
        "images": list(policy.patterns),
        "mode": policy.mode,
        "authorities": [authority.name for authority in policy.authorities],
        **({"static": policy.static} if policy.static is not None else {}),
        "threshold": policy.threshold,
        "pinDigests": policy.pin_digests,
        **(
            {"attestations": conditions.describe(policy.attestations)}
            if policy.attestations
            else {}
        ),
    }


def matching(
    policies: Sequence[CompiledPolicy],
    reference: references.ImageReference,
    namespace_labels: Mapping[str, str] | None,
) -> list[CompiledPolicy]:
    """Policies that cover this image (and namespace, when labels are given)."""
    return [
        policy
        for policy in policies
        if policy.covers(reference)
        and (namespace_labels is None or policy.applies_to(namespace_labels))
    ]


# ---------------------------------------------------------------------------------------------
# Images no policy covers


def uncovered_mode(default: Uncovered, labels: Mapping[str, str]) -> tuple[Uncovered, str]:
    """The namespace's :data:`UNCOVERED_LABEL` value, else ``default``; and where it came from.

    A value that is not deny, warn or allow counts as deny: a typo never lets images in."""
    raw = labels.get(UNCOVERED_LABEL)
    if raw is None:
        return default, "the operator's default"
    try:
        return Uncovered(raw.strip().lower()), f"label {UNCOVERED_LABEL}={raw}"
    except ValueError:
        return Uncovered.DENY, f"label {UNCOVERED_LABEL}={raw!r} is not deny, warn or allow"


def _elsewhere(pattern: str, reference: references.ImageReference) -> str | None:
    """The registry under which ``pattern`` covers this very repository, when it is another
    name than the image's (``127.0.0.1:5000`` for ``localhost:5000/app``); else None."""
    normalised = references.normalise_pattern(pattern)
    host, _, _ = normalised.partition("/")
    if host == reference.registry or any(ch in host for ch in "*?"):
        return None
    if compile_glob(pattern).fullmatch(f"{host}/{reference.repository}"):
        return host
    return None


def uncovered_message(
    image: str,
    reference: references.ImageReference,
    namespace: str,
    applicable: Sequence[CompiledPolicy],
    *,
    mode: Uncovered,
    source: str,
) -> str:
    """Why an image is not admitted (or admitted with a warning): no policy covers it, here are
    the patterns that exist for this namespace (those naming its repository or registry
    first), and how to let it in."""
    ranked: list[tuple[int, str, int, str]] = []
    aliases: dict[str, str] = {}
    for policy in applicable:
        for index, pattern in enumerate(policy.patterns):
            elsewhere = _elsewhere(pattern, reference)
            if elsewhere is not None:
                aliases.setdefault(elsewhere, policy.name)
            same_registry = references.normalise_pattern(pattern).startswith(
                f"{reference.registry}/"
            )
            rank = 0 if elsewhere is not None else 1 if same_registry else 2
            ranked.append((rank, policy.name, index, f"{pattern} ({policy.name})"))
    patterns = [shown for *_, shown in sorted(ranked)]
    if patterns:
        shown = ", ".join(patterns[:MAX_PATTERNS_SHOWN])
        if len(patterns) > MAX_PATTERNS_SHOWN:
            shown += f" and {len(patterns) - MAX_PATTERNS_SHOWN} more"
        exist = f"the patterns of the ImagePolicies that apply here are {shown}"
    else:
        exist = "no ImagePolicy applies to this namespace"
    alias = "".join(
        f"; ImagePolicy {name!r} covers this repository as {host}, another name: a registry is "
        "covered only under the names its policies give"
        for host, name in sorted(aliases.items())[:1]
    )
    verdict = "denied" if mode is Uncovered.DENY else "admitted with a warning"
    return (
        f"image {image!r} is not covered by any ImagePolicy for namespace {namespace!r} "
        f"(read as {reference.name}); {exist}{alias}. Uncovered images are {verdict} "
        f"({source}): add an ImagePolicy whose images cover it (signed by a trusted authority, "
        "or authorities [{static: {action: pass}}] to admit it unsigned)"
    )
