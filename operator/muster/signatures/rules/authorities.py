"""Who may vouch for an artifact: public keys and keyless identities, the same for every format.

An authority is compiled once from a policy (an ``ImagePolicy`` authority, a ``Model``
signature spec, CLI flags) and handed to whichever signature format found evidence: legacy
cosign signatures, Sigstore bundles, and formats still to come all verify against these types,
so a policy never compiles an authority twice. :func:`threshold` then says whether enough
distinct authorities vouched.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from cryptography import x509

from muster.signatures.rules import keys, notation, proofs, trust

__all__ = [
    "Authority",
    "Identity",
    "InvalidPolicy",
    "KeyAuthority",
    "KeylessAuthority",
    "NotationAuthority",
    "Outcome",
    "Threshold",
    "certificate_identity",
    "describe",
    "not_notation",
    "outcome",
    "threshold",
]
# Fulcio's certificate extensions, https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
_ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_OTHERNAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")


class InvalidPolicy(ValueError):
    """An identity or authority that cannot be used as written."""


# ---------------------------------------------------------------------------------------------
# Identities


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """An expected keyless signer: issuer and subject, each exact or a full-match regexp."""

    issuer: str | None = None
    subject: str | None = None
    issuer_regexp: str | None = None
    subject_regexp: str | None = None

    def __post_init__(self) -> None:
        for name, exact, pattern in (
            ("issuer", self.issuer, self.issuer_regexp),
            ("subject", self.subject, self.subject_regexp),
        ):
            if (exact is None) == (pattern is None):
                raise InvalidPolicy(f"identity needs exactly one of {name} and {name}_regexp")
            if exact is not None and not exact:
                raise InvalidPolicy(f"identity {name} is empty")
            if pattern is not None:
                _compile(name, pattern)

    def matches(self, identity: proofs.CertificateIdentity) -> bool:
        if identity.issuer is None:
            return False
        if not _match(self.issuer, self.issuer_regexp, identity.issuer):
            return False
        return any(_match(self.subject, self.subject_regexp, san) for san in identity.subjects)

    def __str__(self) -> str:
        subject = self.subject if self.subject is not None else f"/{self.subject_regexp}/"
        issuer = self.issuer if self.issuer is not None else f"/{self.issuer_regexp}/"
        return f"{subject} (issuer {issuer})"


def _compile(name: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise InvalidPolicy(f"{name} regexp {pattern!r} is invalid: {error}") from None


def _match(exact: str | None, pattern: str | None, value: str) -> bool:
    if exact is not None:
        return value == exact
    if pattern is None:  # __post_init__ rules this out; never match by accident
        return False
    # Full match, like cosign's anchored regexps: "philipp" must not admit "evil-philipp".
    return _compile("identity", pattern).fullmatch(value) is not None


def _der_utf8(value: bytes) -> str | None:
    """Decode a DER UTF8String (how Fulcio's newer extensions carry text)."""
    if len(value) < 2 or value[0] != 0x0C:
        return None
    length, offset = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(value) < 2 + count:
            return None
        length, offset = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    if len(value) != offset + length:
        return None
    try:
        return value[offset:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def certificate_identity(certificate: x509.Certificate) -> proofs.CertificateIdentity:
    """Read the OIDC issuer and the subject alternative names of a Fulcio certificate."""
    issuer: str | None = None
    extensions = {ext.oid: ext.value for ext in _extensions(certificate)}
    v2 = extensions.get(_ISSUER_V2_OID)
    if isinstance(v2, x509.UnrecognizedExtension):
        issuer = _der_utf8(v2.value)
    v1 = extensions.get(_ISSUER_V1_OID)
    if issuer is None and isinstance(v1, x509.UnrecognizedExtension):
        try:
            issuer = v1.value.decode("utf-8")
        except UnicodeDecodeError:
            issuer = None
    subjects: list[str] = []
    san = extensions.get(x509.SubjectAlternativeName.oid)
    if isinstance(san, x509.SubjectAlternativeName):
        subjects.extend(san.get_values_for_type(x509.RFC822Name))
        subjects.extend(san.get_values_for_type(x509.UniformResourceIdentifier))
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id == _OTHERNAME_OID and (text := _der_utf8(other.value)):
                subjects.append(text)
    return proofs.CertificateIdentity(issuer=issuer, subjects=tuple(subjects))


def _extensions(certificate: x509.Certificate) -> Iterable[x509.Extension[x509.ExtensionType]]:
    try:
        return list(certificate.extensions)
    except (ValueError, x509.DuplicateExtension) as error:  # duplicate or malformed extensions
        raise proofs.Rejected(f"signing certificate has malformed extensions: {error}") from None


# ---------------------------------------------------------------------------------------------
# Authorities


@dataclasses.dataclass(frozen=True, slots=True)
class KeyAuthority:
    """Signatures by one public key; with a ``trusted_root`` a verified log entry is required."""

    name: str
    key: keys.PublicKey
    trusted_root: trust.TrustedRoot | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class KeylessAuthority:
    """Fulcio-certified signatures by any of ``identities``, checked against ``trusted_root``."""

    name: str
    identities: tuple[Identity, ...]
    trusted_root: trust.TrustedRoot

    def __post_init__(self) -> None:
        if not self.identities:
            raise InvalidPolicy(f"keyless authority {self.name!r} lists no identity")


@dataclasses.dataclass(frozen=True, slots=True)
class NotationAuthority:
    """Notation (Notary Project) signatures judged by one Notation trust policy."""

    name: str
    policy: notation.TrustPolicy


Authority: TypeAlias = KeyAuthority | KeylessAuthority | NotationAuthority


def not_notation(authority: Authority, what: str) -> KeyAuthority | KeylessAuthority:
    """``authority`` for a Sigstore format; :class:`proofs.Inapplicable` for a Notation one."""
    if isinstance(authority, NotationAuthority):
        raise proofs.Inapplicable(f"a Notation authority does not verify {what}")
    return authority


def describe(authority: Authority) -> str:
    """Whom an authority trusts, for a refused user: its key fingerprint or its first keyless
    identity (never key material)."""
    if isinstance(authority, KeyAuthority):
        return f"{authority.name} ({keys.describe(authority.key)})"
    if isinstance(authority, NotationAuthority):
        policy = authority.policy
        stores = ", ".join(store.name for store in policy.trust_stores)
        identity = policy.trusted_identities[0] if policy.trusted_identities else "any"
        others = len(policy.trusted_identities) - 1
        extra = f" or {others} more" if others > 0 else ""
        return (
            f"{authority.name} (Notation {policy.level}: trust store {stores}, "
            f"identity {identity}{extra})"
        )
    first = authority.identities[0]
    more = f" or {len(authority.identities) - 1} more" if len(authority.identities) > 1 else ""
    subject = first.subject or f"/{first.subject_regexp}/"
    issuer = first.issuer or f"/{first.issuer_regexp}/"
    return f"{authority.name} (keyless: {subject} from {issuer}{more})"


# ---------------------------------------------------------------------------------------------
# Thresholds


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one authority said about an image: a verified signature, or why there is none."""

    authority: str
    verified: proofs.Proof | None = None
    reason: str = ""


def outcome(authority: str, attempts: Sequence[proofs.Proof | proofs.Rejected]) -> Outcome:
    """Fold the attempts of one authority (one per signature or bundle) into its outcome."""
    for attempt in attempts:
        if isinstance(attempt, proofs.Proof):
            return Outcome(authority=authority, verified=attempt)
    reasons = "; ".join(str(attempt) for attempt in attempts) or "no signature found"
    return Outcome(authority=authority, reason=reasons)


@dataclasses.dataclass(frozen=True, slots=True)
class Threshold:
    """Whether enough distinct authorities vouch for an image."""

    required: int
    satisfied: tuple[str, ...]
    missing: tuple[Outcome, ...]

    @property
    def passed(self) -> bool:
        return len(self.satisfied) >= self.required

    @property
    def message(self) -> str:
        if self.passed:
            return f"signed by {len(self.satisfied)} of {self.required} required authorities"
        details = "; ".join(f"{o.authority}: {o.reason}" for o in self.missing)
        return f"signed by {len(self.satisfied)} of {self.required} required authorities" + (
            f" ({details})" if details else ""
        )


def threshold(outcomes: Sequence[Outcome], required: int) -> Threshold:
    """N of M: at least ``required`` distinct authorities must have a verified signature."""
    names = [o.authority for o in outcomes]
    if len(set(names)) != len(names):
        raise InvalidPolicy("each authority must be judged exactly once")
    if not 1 <= required <= len(outcomes):
        raise InvalidPolicy(
            f"threshold {required} is not between 1 and the {len(outcomes)} authorities"
        )
    satisfied = tuple(o.authority for o in outcomes if o.verified is not None)
    missing = tuple(o for o in outcomes if o.verified is None)
    return Threshold(required=required, satisfied=satisfied, missing=missing)
