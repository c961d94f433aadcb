"""Notation (Notary Project) signatures: JWS and COSE envelopes judged by a Notation trust policy.

What is checked follows the Notary Project specifications (signature specification, signature
envelopes JWS/COSE, trust store and trust policy specification v1.1):

- **integrity**: the envelope parses, its critical headers are all understood, the signing
  scheme is ``notary.x509``, the signature algorithm fits the signing key (RSASSA-PSS with
  SHA-256/384/512 for RSA 2048/3072/4096 bits, ECDSA on P-256/P-384/P-521), the signature
  verifies with the signing certificate's key, the certificate chain in the envelope is a
  valid code-signing chain (each certificate issued and signed by the next, ending at a
  self-signed root, CA and key-usage extensions as the spec requires) at the signing time, and
  the payload is a descriptor of exactly the image digest;
- **authenticity**: a certificate of that chain is one of the trust store's CA certificates,
  and the signing certificate's subject matches a trusted identity (``x509.subject:`` DN, a
  subset match as Notation does; ``*`` trusts any);
- **authenticTimestamp**: the signing time is only what the signer claims, so the chain must
  also be valid now, unless the policy has TSA trust stores: then (with ``verifyTimestamp``
  ``always``, or ``afterCertExpiry`` once a certificate of the chain has expired) the
  envelope's RFC 3161 timestamp countersignature must verify (``rfc3161-client``: over the
  signature value, by a TSA certificate with the timeStamping purpose chaining to a TSA root,
  valid at the timestamp's time) and the timestamp, within its accuracy, must fall in the
  validity of every certificate of the chain. A TSA chain that names revocation endpoints
  fails, as the signing chain does below;
- **expiry**: the signature's own ``io.cncf.notary.expiry``, if any, has not passed;
- **revocation**: not checked (no OCSP or CRL is fetched at admission). A chain that names
  revocation endpoints fails this check, so ``strict`` refuses what it cannot check.

The verification level decides which failures refuse and which are only logged: ``strict``
enforces all, ``permissive`` enforces integrity and authenticity, ``audit`` enforces integrity
only, ``skip`` verifies nothing; a level's ``override`` can move any check but integrity to
``log`` or ``skip``. What was only logged comes back in :attr:`Verified.logged`, so a caller
admits with a warning.

Without TSA trust stores a timestamp countersignature is noticed (:attr:`Verified.timestamp`)
but not verified, and never extends a certificate's validity, as in notation-go.

Why not a JOSE or COSE library: Notation's JWS is the flattened JSON serialization with
critical headers of its own (PyJWT reads compact tokens only and rejects unknown ``crit``),
and pycose brings ``ecdsa`` and the unmaintained ``certvalidator`` along. CBOR is decoded by
``cbor2``; every signature is verified by ``cryptography``; the JWS and COSE structures
around them are a few fields each and are read here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import enum
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

# cbor2 (COSE envelopes) and rfc3161_client (countersignatures) are imported where a Notation
# signature is read: an ImagePolicy with key authorities (and a command's start-up) needs neither.
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from muster.kernel import messages
from muster.signatures.rules import proofs

__all__ = [
    "COSE_MEDIA_TYPE",
    "FORMAT_NAME",
    "JWS_MEDIA_TYPE",
    "SIGNATURE_ARTIFACT_TYPE",
    "Check",
    "Envelope",
    "InvalidTrustPolicy",
    "Level",
    "Signed",
    "TrustPolicy",
    "TrustStore",
    "Verified",
    "parse",
    "parse_identity",
    "verify",
]

FORMAT_NAME = "notation"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
PAYLOAD_MEDIA_TYPE = "application/vnd.cncf.notary.payload.v1+json"
MAX_ENVELOPE_BYTES = 256 * 1024
MAX_CHAIN = 10

_SCHEME = "io.cncf.notary.signingScheme"
_SIGNING_TIME = "io.cncf.notary.signingTime"
_EXPIRY = "io.cncf.notary.expiry"
_AUTHENTIC_SIGNING_TIME = "io.cncf.notary.authenticSigningTime"
_SIGNING_AGENT = "io.cncf.notary.signingAgent"
_TIMESTAMP = "io.cncf.notary.timestampSignature"
TimestampOption = Literal["always", "afterCertExpiry"]
# RFC 3628's baseline time-stamp policy: no accuracy stated means one second (tspclient-go).
_BASELINE_TIMESTAMP_POLICY = x509.ObjectIdentifier("0.4.0.2023.1.1")
# Protected headers this verifier understands, so they may be listed as critical.
_KNOWN_CRITICAL = {_SCHEME, _EXPIRY}


class InvalidTrustPolicy(ValueError):
    """A trust policy or trust store that cannot be used as written."""


# ---------------------------------------------------------------------------------------------
# Trust policy


class Level(enum.StrEnum):
    STRICT = "strict"
    PERMISSIVE = "permissive"
    AUDIT = "audit"
    SKIP = "skip"


class Check(enum.StrEnum):
    INTEGRITY = "integrity"
    AUTHENTICITY = "authenticity"
    AUTHENTIC_TIMESTAMP = "authenticTimestamp"
    EXPIRY = "expiry"
    REVOCATION = "revocation"


Action = Literal["enforce", "log", "skip"]

# The Notary Project trust policy specification's table of levels.
_LEVELS: dict[Level, dict[Check, Action]] = {
    Level.STRICT: dict.fromkeys(Check, "enforce"),
    Level.PERMISSIVE: {
        Check.INTEGRITY: "enforce",
        Check.AUTHENTICITY: "enforce",
        Check.AUTHENTIC_TIMESTAMP: "log",
        Check.EXPIRY: "log",
        Check.REVOCATION: "log",
    },
    Level.AUDIT: {
        Check.INTEGRITY: "enforce",
        Check.AUTHENTICITY: "log",
        Check.AUTHENTIC_TIMESTAMP: "log",
        Check.EXPIRY: "log",
        Check.REVOCATION: "log",
    },
    Level.SKIP: dict.fromkeys(Check, "skip"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class TrustStore:
    """A named set of CA certificates (Notation trust store type ``ca``)."""

    name: str
    certificates: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.certificates:
            raise InvalidTrustPolicy(f"trust store {self.name!r} holds no certificate")


@dataclasses.dataclass(frozen=True, slots=True)
class TrustPolicy:
    """One Notation trust policy: where it applies, how strictly, whom it trusts."""

    name: str
    trust_stores: tuple[TrustStore, ...]
    trusted_identities: tuple[str, ...]
    level: Level = Level.STRICT
    overrides: Mapping[Check, Action] = dataclasses.field(default_factory=dict)
    registry_scopes: tuple[str, ...] = ("*",)
    # Trust stores of type tsa: with any, timestamps are verified (see verify_timestamp).
    tsa_stores: tuple[TrustStore, ...] = ()
    verify_timestamp: TimestampOption = "always"

    def __post_init__(self) -> None:
        if self.level is Level.SKIP:
            if self.trust_stores or self.trusted_identities or self.tsa_stores:
                raise InvalidTrustPolicy(
                    f"trust policy {self.name!r}: level skip takes no trust stores or identities"
                )
        else:
            if not self.trust_stores:
                raise InvalidTrustPolicy(f"trust policy {self.name!r} names no trust store")
            if not self.trusted_identities:
                raise InvalidTrustPolicy(f"trust policy {self.name!r} lists no trusted identity")
            if "*" in self.trusted_identities and len(self.trusted_identities) > 1:
                raise InvalidTrustPolicy(
                    f"trust policy {self.name!r}: '*' must be the only trusted identity"
                )
            for identity in self.trusted_identities:
                if identity != "*":
                    parse_identity(identity)
        if Check.INTEGRITY in self.overrides:
            raise InvalidTrustPolicy(f"trust policy {self.name!r}: integrity cannot be overridden")
        if self.level is Level.SKIP and self.overrides:
            raise InvalidTrustPolicy(f"trust policy {self.name!r}: level skip takes no override")
        if not self.registry_scopes:
            raise InvalidTrustPolicy(f"trust policy {self.name!r} lists no registry scope")
        if "*" in self.registry_scopes and len(self.registry_scopes) > 1:
            raise InvalidTrustPolicy(f"trust policy {self.name!r}: '*' must be the only scope")

    def action(self, check: Check) -> Action:
        return self.overrides.get(check, _LEVELS[self.level][check])

    def applies_to(self, repository: str) -> bool:
        """Whether ``registry/repository`` is in scope: ``*`` or that exact name, as Notation."""
        return any(scope in ("*", repository) for scope in self.registry_scopes)


# Go's pkix.Name.String() short names, which Notation matches DNs by.
_SHORT_NAMES: dict[x509.ObjectIdentifier, str] = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.POSTAL_CODE: "POSTALCODE",
}
_IDENTITY_PREFIX = "x509.subject:"
# Notation's examples write "C=US, ST=WA, O=..." (go-ldap trims the spaces); cryptography's
# RFC 4514 parser does not, so spaces after an unescaped comma are dropped first.
_SPACED_SEPARATOR = re.compile(r"(?<!\\),\s+")


def parse_identity(identity: str) -> dict[str, str]:
    """A trusted identity ``x509.subject: C=US, ST=WA, O=...`` as attribute -> value.

    As Notation: RFC 4514, ``S`` is ``ST``, no multi-valued RDN, no repeated attribute, no
    ``=#`` hex values, and C, ST and O at least.
    """
    kind, _, value = identity.partition(":")
    if kind.strip() != _IDENTITY_PREFIX[:-1] or not value.strip():
        raise InvalidTrustPolicy(
            f"trusted identity {identity!r} is not 'x509.subject: <DN>' or '*'"
        )
    dn = value.strip()
    if "=#" in dn:
        raise InvalidTrustPolicy(f"trusted identity {identity!r}: '=#' values are not supported")
    try:
        name = x509.Name.from_rfc4514_string(
            _SPACED_SEPARATOR.sub(",", dn),
            {"S": NameOID.STATE_OR_PROVINCE_NAME, "SERIALNUMBER": NameOID.SERIAL_NUMBER},
        )
    except ValueError as error:
        raise InvalidTrustPolicy(
            f"trusted identity {identity!r} is not an RFC 4514 DN: {messages.first_line(error)}"
        ) from None
    attributes = _attributes(name, what=f"trusted identity {identity!r}", error=InvalidTrustPolicy)
    missing = [field for field in ("C", "ST", "O") if not attributes.get(field)]
    if missing:
        raise InvalidTrustPolicy(
            f"trusted identity {identity!r} lacks {', '.join(missing)} (C, ST and O are required)"
        )
    return attributes


def _attributes(name: x509.Name, *, what: str, error: type[ValueError]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for rdn in name.rdns:
        if len(rdn) != 1:
            raise error(f"{what} has a multi-valued RDN")
        (attribute,) = tuple(rdn)
        key = _SHORT_NAMES.get(attribute.oid, attribute.oid.dotted_string)
        if key in attributes:
            raise error(f"{what} repeats the attribute {key}")
        value = attribute.value
        attributes[key] = value if isinstance(value, str) else value.hex()
    return attributes


# ---------------------------------------------------------------------------------------------
# Envelopes


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A signature blob as found on a registry, with the media type its manifest gave it."""

    media_type: str
    blob: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Signed:
    """What an envelope says, once parsed; nothing in it is verified yet."""

    format: Literal["jws", "cose"]
    algorithm: str
    to_be_signed: bytes
    signature: bytes
    payload: bytes
    content_type: str
    scheme: str
    signing_time: datetime.datetime
    expiry: datetime.datetime | None
    chain: tuple[x509.Certificate, ...]
    critical: tuple[str, ...]
    timestamp: bytes | None  # the RFC 3161 TimeStampToken countersigning ``signature``
    signing_agent: str | None


def parse(envelope: Envelope) -> Signed:
    """Read a JWS or COSE envelope; :class:`proofs.Rejected` if it is not a Notation one."""
    if len(envelope.blob) > MAX_ENVELOPE_BYTES:
        raise proofs.Rejected(f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    if envelope.media_type == JWS_MEDIA_TYPE:
        return _parse_jws(envelope.blob)
    if envelope.media_type == COSE_MEDIA_TYPE:
        return _parse_cose(envelope.blob)
    raise proofs.Rejected(f"envelope media type {envelope.media_type!r} is not JWS or COSE")


def _b64url(value: object, what: str) -> bytes:
    if not isinstance(value, str) or "=" in value:
        raise proofs.Rejected(f"JWS {what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise proofs.Rejected(f"JWS {what} is not base64url") from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise proofs.Rejected(f"{what} repeats a member")
        return dict(pairs)

    try:
        value = json.loads(raw, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError):
        raise proofs.Rejected(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise proofs.Rejected(f"{what} is not a JSON object")
    return value


def _parse_jws(blob: bytes) -> Signed:
    document = _json_object(blob, "JWS envelope")
    unknown = set(document) - {"payload", "protected", "header", "signature"}
    if unknown:
        raise proofs.Rejected(f"JWS envelope has unexpected members {sorted(unknown)}")
    protected_b64 = document.get("protected")
    payload_b64 = document.get("payload")
    payload = _b64url(payload_b64, "payload")
    protected = _json_object(_b64url(protected_b64, "protected header"), "JWS protected header")
    signature = _b64url(document.get("signature"), "signature")
    header = document.get("header")
    if not isinstance(header, dict):
        raise proofs.Rejected("JWS envelope has no unprotected header")
    chain_b64 = header.get("x5c")
    if not isinstance(chain_b64, list) or not all(isinstance(c, str) for c in chain_b64):
        raise proofs.Rejected("JWS unprotected header has no x5c certificate chain")
    try:
        chain_der = [base64.b64decode(c, validate=True) for c in chain_b64]
    except (binascii.Error, ValueError):
        raise proofs.Rejected("JWS x5c holds a certificate that is not base64") from None
    algorithm = protected.get("alg")
    if not isinstance(algorithm, str):
        raise proofs.Rejected("JWS protected header names no algorithm")
    critical = protected.get("crit")
    if not isinstance(critical, list) or not all(isinstance(c, str) for c in critical):
        raise proofs.Rejected("JWS protected header has no list of critical headers")
    agent = header.get(_SIGNING_AGENT)
    return Signed(
        format="jws",
        algorithm=algorithm,
        to_be_signed=f"{protected_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
        payload=payload,
        content_type=_text(protected.get("cty"), "content type"),
        scheme=_text(protected.get(_SCHEME), "signing scheme"),
        signing_time=_jws_time(protected.get(_SIGNING_TIME), "signing time"),
        expiry=_jws_time(protected[_EXPIRY], "expiry") if _EXPIRY in protected else None,
        chain=_certificates(chain_der),
        critical=tuple(critical),
        timestamp=_jws_timestamp(header.get(_TIMESTAMP)),
        signing_agent=agent if isinstance(agent, str) else None,
    )


def _jws_timestamp(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise proofs.Rejected("JWS timestamp countersignature is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise proofs.Rejected("JWS timestamp countersignature is not base64") from None


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise proofs.Rejected(f"envelope has no {what}")
    return value


def _jws_time(value: object, what: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise proofs.Rejected(f"JWS {what} is missing or not a string")
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise proofs.Rejected(f"JWS {what} {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise proofs.Rejected(f"JWS {what} {value!r} has no time zone")
    return parsed


# COSE labels (RFC 9052) and algorithms (IANA COSE Algorithms) that Notation uses.
_COSE_ALG, _COSE_CRIT, _COSE_CONTENT_TYPE, _COSE_X5CHAIN = 1, 2, 3, 33
_COSE_ALGORITHMS = {
    -37: "PS256",
    -38: "PS384",
    -39: "PS512",
    -7: "ES256",
    -35: "ES384",
    -36: "ES512",
}
_COSE_SIGN1_TAG = 18


def _cbor(raw: bytes, what: str) -> Any:
    import cbor2

    try:
        return cbor2.loads(raw, max_depth=16, allow_duplicate_keys=False, allow_indefinite=False)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as error:
        raise proofs.Rejected(f"{what} is not valid CBOR: {messages.first_line(error)}") from None


def _parse_cose(blob: bytes) -> Signed:
    import cbor2

    message = _cbor(blob, "COSE envelope")
    if not isinstance(message, cbor2.CBORTag) or message.tag != _COSE_SIGN1_TAG:
        raise proofs.Rejected("COSE envelope is not a tagged COSE_Sign1 message")
    body = message.value
    if not isinstance(body, list | tuple) or len(body) != 4:
        raise proofs.Rejected("COSE_Sign1 message does not have four members")
    protected_raw, unprotected, payload, signature = body
    if not isinstance(protected_raw, bytes) or not isinstance(unprotected, Mapping):
        raise proofs.Rejected("COSE_Sign1 headers are malformed")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise proofs.Rejected("COSE_Sign1 has a detached payload or no signature")
    protected = _cbor(protected_raw, "COSE protected header")
    if not isinstance(protected, Mapping):
        raise proofs.Rejected("COSE protected header is not a map")
    algorithm = _COSE_ALGORITHMS.get(protected.get(_COSE_ALG))  # type: ignore[arg-type]
    if algorithm is None:
        raise proofs.Rejected(
            f"COSE algorithm {protected.get(_COSE_ALG)!r} is not one Notation allows"
        )
    critical = protected.get(_COSE_CRIT)
    if not isinstance(critical, list | tuple) or not all(isinstance(c, str) for c in critical):
        raise proofs.Rejected("COSE protected header has no list of critical headers")
    chain = unprotected.get(_COSE_X5CHAIN)
    chain_der = [chain] if isinstance(chain, bytes) else chain
    if not isinstance(chain_der, list | tuple) or not all(isinstance(c, bytes) for c in chain_der):
        raise proofs.Rejected("COSE unprotected header has no x5chain certificate chain")
    # Sig_structure for COSE_Sign1 (RFC 9052 section 4.4), empty external AAD.
    to_be_signed = cbor2.dumps(["Signature1", protected_raw, b"", payload])
    agent = unprotected.get(_SIGNING_AGENT)
    return Signed(
        format="cose",
        algorithm=algorithm,
        to_be_signed=to_be_signed,
        signature=signature,
        payload=payload,
        content_type=_text(protected.get(_COSE_CONTENT_TYPE), "content type"),
        scheme=_text(protected.get(_SCHEME), "signing scheme"),
        signing_time=_cose_time(protected.get(_SIGNING_TIME), "signing time"),
        expiry=_cose_time(protected[_EXPIRY], "expiry") if _EXPIRY in protected else None,
        chain=_certificates(list(chain_der)),
        critical=tuple(critical),
        timestamp=_cose_timestamp(unprotected.get(_TIMESTAMP)),
        signing_agent=agent if isinstance(agent, str) else None,
    )


def _cose_timestamp(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise proofs.Rejected("COSE timestamp countersignature is not a byte string")


def _cose_time(value: object, what: str) -> datetime.datetime:
    # Tag 1 (epoch seconds); cbor2 already turns it into an aware datetime.
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value
    raise proofs.Rejected(f"COSE {what} is missing or not a tagged epoch time")


def _certificates(ders: Sequence[bytes]) -> tuple[x509.Certificate, ...]:
    if not ders:
        raise proofs.Rejected("envelope holds no certificate")
    if len(ders) > MAX_CHAIN:
        raise proofs.Rejected(f"envelope holds more than {MAX_CHAIN} certificates")
    return tuple(_certificate(der) for der in ders)


def _certificate(der: bytes) -> x509.Certificate:
    """A certificate read whole now: cryptography parses names, validity and extensions
    lazily, and a malformed one must be refused here, not fail later as another exception."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        certificate.subject.rfc4514_string()
        certificate.issuer.rfc4514_string()
        _ = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
        list(certificate.extensions)
        certificate.signature_hash_algorithm  # noqa: B018 (raises for unknown algorithms)
    except (
        ValueError,
        TypeError,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        UnsupportedAlgorithm,
    ) as error:
        raise proofs.Rejected(
            f"envelope holds an invalid certificate: {messages.first_line(error)}"
        ) from None
    return certificate


# ---------------------------------------------------------------------------------------------
# Verification


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    """What a Notation signature proved for one trust policy.

    ``logged`` holds the failures the level only logs (an ``audit`` policy admits an untrusted
    signature with these as warnings); ``skipped`` the checks the policy turned off.
    """

    format: Literal["jws", "cose", "none"]
    digest: str
    policy: str
    level: Level
    signer: str = ""
    trust_store: str | None = None
    trusted_identity: str | None = None
    signing_time: datetime.datetime | None = None
    expiry: datetime.datetime | None = None
    # "none", "present, not verified" (no TSA trust store asked for it), or the verified time.
    timestamp: str = "none"
    logged: tuple[str, ...] = ()
    skipped: tuple[Check, ...] = ()

    def proof(self, authority: str) -> proofs.Proof:
        """The format-neutral proof the image gate counts."""
        if self.level is Level.SKIP:
            signer = f"nobody: trust policy {self.policy!r} skips Notation verification"
        else:
            trust = f"trust store {self.trust_store}" if self.trust_store else "no trusted CA"
            who = self.trusted_identity or "no trusted identity"
            stamp = {"none": "", NOT_VERIFIED: ", its timestamp not verified"}.get(
                self.timestamp, f", timestamped {self.timestamp}"
            )
            signer = (
                f"{self.signer} (Notation {self.format.upper()}, {trust}, identity {who}{stamp})"
            )
        return proofs.Proof(
            digest=self.digest,
            signer=signer,
            authority=authority,
            format=FORMAT_NAME,
            warnings=self.logged,
        )


_ALGORITHMS: dict[str, tuple[type[hashes.HashAlgorithm], str]] = {
    "PS256": (hashes.SHA256, "RSA"),
    "PS384": (hashes.SHA384, "RSA"),
    "PS512": (hashes.SHA512, "RSA"),
    "ES256": (hashes.SHA256, "P-256"),
    "ES384": (hashes.SHA384, "P-384"),
    "ES512": (hashes.SHA512, "P-521"),
}
_RSA_ALGORITHMS = {2048: "PS256", 3072: "PS384", 4096: "PS512"}
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def verify(
    envelope: Envelope | None,
    *,
    digest: str,
    policy: TrustPolicy,
    now: datetime.datetime,
) -> Verified:
    """Judge one envelope for ``digest`` by ``policy`` at ``now``.

    Raises :class:`proofs.Rejected` when an enforced check fails; ``envelope`` may be None
    only for a ``skip`` policy.
    """
    if policy.level is Level.SKIP:
        return Verified(format="none", digest=digest, policy=policy.name, level=policy.level)
    if envelope is None:
        raise proofs.Rejected("no Notation signature")
    logged: list[str] = []
    skipped = tuple(check for check in Check if policy.action(check) == "skip")

    def fail(check: Check, reason: str) -> None:
        action = policy.action(check)
        if action == "enforce":
            raise proofs.Rejected(reason)
        if action == "log":
            logged.append(f"{check}: {reason}")

    # Integrity is always enforced: nothing below means anything without it.
    signed = parse(envelope)
    _check_headers(signed)
    leaf = signed.chain[0]
    _check_signature(signed, leaf)
    _check_chain(signed.chain, at=signed.signing_time, what="at its signing time")
    target = _target_digest(signed)
    if target != digest:
        raise proofs.Rejected(f"signs {target}, not the image digest {digest}")

    store_name: str | None = None
    identity: str | None = None
    if policy.action(Check.AUTHENTICITY) != "skip":
        store_name = _trusted_store(signed.chain, policy.trust_stores)
        if store_name is None:
            fail(
                Check.AUTHENTICITY,
                f"certificate chain of {_subject(leaf)} does not lead to a CA in trust store(s) "
                + ", ".join(store.name for store in policy.trust_stores),
            )
        identity = _trusted_identity(leaf, policy.trusted_identities)
        if identity is None:
            fail(
                Check.AUTHENTICITY,
                f"signing certificate subject {_subject(leaf)} is none of the trusted "
                "identities " + "; ".join(policy.trusted_identities),
            )
    stamped: datetime.datetime | None = None
    if policy.action(Check.AUTHENTIC_TIMESTAMP) != "skip":
        try:
            stamped = _authentic_timestamp(signed, policy, now)
        except proofs.Rejected as error:
            fail(Check.AUTHENTIC_TIMESTAMP, str(error))
    if policy.action(Check.EXPIRY) != "skip" and signed.expiry and now > signed.expiry:
        fail(Check.EXPIRY, f"signature expired at {signed.expiry.isoformat()}")
    if policy.action(Check.REVOCATION) != "skip":
        revocable = [c for c in signed.chain if _names_revocation_endpoints(c)]
        if revocable:
            fail(
                Check.REVOCATION,
                f"revocation of {_subject(revocable[0])} cannot be checked "
                "(Muster fetches no OCSP or CRL)",
            )
    return Verified(
        format=signed.format,
        digest=digest,
        policy=policy.name,
        level=policy.level,
        signer=_subject(leaf),
        trust_store=store_name,
        trusted_identity=identity,
        signing_time=signed.signing_time,
        expiry=signed.expiry,
        timestamp=(
            stamped.isoformat() if stamped else NOT_VERIFIED if signed.timestamp else "none"
        ),
        logged=tuple(logged),
        skipped=skipped,
    )


NOT_VERIFIED = "present, not verified"


def _authentic_timestamp(
    signed: Signed, policy: TrustPolicy, now: datetime.datetime
) -> datetime.datetime | None:
    """As notation-go: the verified timestamp's time, or None when the chain is valid now and
    no timestamp is asked for; :class:`proofs.Rejected` saying why the signing time is not
    authentic."""
    expired = _chain_invalid_at(signed.chain, now)
    wanted = bool(policy.tsa_stores) and (
        policy.verify_timestamp == "always"
        or any(now > certificate.not_valid_after_utc for certificate in signed.chain)
    )
    if not wanted:
        if expired is not None:
            raise proofs.Rejected(
                f"{expired} and there is no verified timestamp to vouch for the signing time"
            )
        return None
    if signed.timestamp is None:
        raise proofs.Rejected(
            "the envelope carries no timestamp countersignature, which the policy's TSA "
            "trust stores require"
        )
    low, high = _verified_timestamp(signed, policy.tsa_stores)
    for certificate in signed.chain:
        if low < certificate.not_valid_before_utc or high > certificate.not_valid_after_utc:
            raise proofs.Rejected(
                f"the timestamp ({low.isoformat()} to {high.isoformat()}) is outside the "
                f"validity of certificate {_subject(certificate)} "
                f"({certificate.not_valid_before_utc.isoformat()} to "
                f"{certificate.not_valid_after_utc.isoformat()})"
            )
    return low + (high - low) / 2


def _der_sequence(content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return b"\x30" + bytes([size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(length)]) + length + content


def _verified_timestamp(
    signed: Signed, stores: Sequence[TrustStore]
) -> tuple[datetime.datetime, datetime.datetime]:
    """The earliest and latest time the countersignature vouches for.

    rfc3161-client reads whole TimeStampResp messages; the envelope holds only the token, so it
    is wrapped in a granted status (SEQUENCE { SEQUENCE { INTEGER 0 }, token }) first.
    """
    import rfc3161_client

    token = signed.timestamp or b""
    try:
        response = rfc3161_client.decode_timestamp_response(
            _der_sequence(b"\x30\x03\x02\x01\x00" + token)
        )
        builder = rfc3161_client.VerifierBuilder()
        for certificate in {c for store in stores for c in store.certificates}:
            builder = builder.add_root_certificate(certificate)
        builder.build().verify_message(response, signed.signature)
        info = response.tst_info
        when = info.gen_time
        accuracy = info.accuracy
        margin = datetime.timedelta(
            seconds=accuracy.seconds,
            milliseconds=accuracy.millis or 0,
            microseconds=accuracy.micros or 0,
        )
        if not margin and info.policy == _BASELINE_TIMESTAMP_POLICY:
            margin = datetime.timedelta(seconds=1)  # the Notary Project's baseline policy
        tsa_certificates = [_certificate(der) for der in response.signed_data.certificates]
    except (rfc3161_client.VerificationError, ValueError, TypeError, OverflowError) as error:
        raise proofs.Rejected(
            f"the timestamp countersignature does not verify with the TSA trust store(s) "
            f"{', '.join(store.name for store in stores)}: {messages.first_line(error)}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    revocable = [c for c in tsa_certificates if _names_revocation_endpoints(c)]
    if revocable:
        raise proofs.Rejected(
            f"revocation of the timestamping certificate {_subject(revocable[0])} cannot be "
            "checked (Muster fetches no OCSP or CRL)"
        )
    return when - margin, when + margin


def _check_headers(signed: Signed) -> None:
    if signed.content_type != PAYLOAD_MEDIA_TYPE:
        raise proofs.Rejected(f"payload content type {signed.content_type!r} is not Notation's")
    if signed.scheme != "notary.x509":
        raise proofs.Rejected(
            f"signing scheme {signed.scheme!r} is not supported (only notary.x509)"
        )
    critical = set(signed.critical)
    if len(critical) != len(signed.critical):
        raise proofs.Rejected("critical headers are listed twice")
    unknown = critical - _KNOWN_CRITICAL
    if unknown:
        raise proofs.Rejected(f"unsupported critical headers {sorted(unknown)}")
    if _SCHEME not in critical:
        raise proofs.Rejected("the signing scheme is not marked critical")
    if signed.expiry is not None and _EXPIRY not in critical:
        raise proofs.Rejected("the expiry is not marked critical")
    if signed.expiry is not None and signed.expiry <= signed.signing_time:
        raise proofs.Rejected("the signature expires before it was signed")


def _check_signature(signed: Signed, leaf: x509.Certificate) -> None:
    algorithm = _ALGORITHMS.get(signed.algorithm)
    if algorithm is None:
        raise proofs.Rejected(
            f"signature algorithm {signed.algorithm!r} is not one Notation allows"
        )
    hash_type, _ = algorithm
    try:
        key = leaf.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise proofs.Rejected(
            "the signing certificate's key is of no kind Notation allows"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        expected = _RSA_ALGORITHMS.get(key.key_size)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        expected = _EC_ALGORITHMS.get(key.curve.name)
    else:
        expected = None
    if expected is None:
        raise proofs.Rejected("signing key is not RSA 2048/3072/4096 or ECDSA P-256/384/521")
    if signed.algorithm != expected:
        raise proofs.Rejected(f"algorithm {signed.algorithm} does not fit the key ({expected})")
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                signed.signature,
                signed.to_be_signed,
                padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=padding.PSS.DIGEST_LENGTH),
                hash_type(),
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(signed.signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(signed.signature[:size], "big")
            s = int.from_bytes(signed.signature[size:], "big")
            key.verify(utils.encode_dss_signature(r, s), signed.to_be_signed, ec.ECDSA(hash_type()))
    except InvalidSignature:
        raise proofs.Rejected(
            f"{signed.format.upper()} signature does not verify with the signing certificate"
        ) from None


def _extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> Any:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as error:
        raise proofs.Rejected(
            f"certificate {_subject(certificate)} has malformed extensions: "
            f"{messages.first_line(error)}"
        ) from None


def _check_chain(chain: Sequence[x509.Certificate], *, at: datetime.datetime, what: str) -> None:
    """The Notary Project's code-signing chain requirements, and every link's signature."""
    leaf, *cas = chain
    if not cas and leaf.subject != leaf.issuer:
        raise proofs.Rejected("certificate chain does not end at a root certificate")
    for index, certificate in enumerate(chain):
        if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
            raise proofs.Rejected(
                f"certificate {_subject(certificate)} was not valid {what} ({at.isoformat()})"
            )
        issuer = chain[index + 1] if index + 1 < len(chain) else certificate
        try:
            certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise proofs.Rejected(
                f"certificate {_subject(certificate)} is not issued by {_subject(issuer)}"
            ) from None
    constraints = _extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise proofs.Rejected("the signing certificate is a CA certificate")
    usage = _extension(leaf, x509.KeyUsage)
    if usage is None or not usage.digital_signature:
        raise proofs.Rejected("the signing certificate does not allow digital signatures")
    if usage.key_cert_sign or usage.crl_sign:
        raise proofs.Rejected("the signing certificate may sign certificates or CRLs")
    extended = _extension(leaf, x509.ExtendedKeyUsage)
    if extended is not None and ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise proofs.Rejected("the signing certificate's extended key usage excludes code signing")
    for depth, certificate in enumerate(cas):
        constraints = _extension(certificate, x509.BasicConstraints)
        if constraints is None or not constraints.ca:
            raise proofs.Rejected(f"certificate {_subject(certificate)} is not a CA")
        if constraints.path_length is not None and constraints.path_length < depth:
            raise proofs.Rejected(f"certificate {_subject(certificate)} exceeds its path length")
        usage = _extension(certificate, x509.KeyUsage)
        if usage is None or not usage.key_cert_sign:
            raise proofs.Rejected(
                f"CA certificate {_subject(certificate)} may not sign certificates"
            )
    if chain[-1].subject != chain[-1].issuer:
        raise proofs.Rejected("certificate chain does not end at a self-signed root")


def _chain_invalid_at(chain: Sequence[x509.Certificate], when: datetime.datetime) -> str | None:
    for certificate in chain:
        if when > certificate.not_valid_after_utc:
            return (
                f"certificate {_subject(certificate)} expired at "
                f"{certificate.not_valid_after_utc.isoformat()}"
            )
        if when < certificate.not_valid_before_utc:
            return (
                f"certificate {_subject(certificate)} is not valid before "
                f"{certificate.not_valid_before_utc.isoformat()}"
            )
    return None


def _target_digest(signed: Signed) -> str:
    payload = _json_object(signed.payload, "payload")
    target = payload.get("targetArtifact")
    if not isinstance(target, dict):
        raise proofs.Rejected("payload has no targetArtifact descriptor")
    digest = target.get("digest")
    if not isinstance(digest, str) or ":" not in digest:
        raise proofs.Rejected("payload's targetArtifact has no digest")
    return digest


def _trusted_store(chain: Sequence[x509.Certificate], stores: Sequence[TrustStore]) -> str | None:
    # As Notation: the chain (already verified link by link) contains a trusted certificate.
    for store in stores:
        if any(trusted == certificate for trusted in store.certificates for certificate in chain):
            return store.name
    return None


def _trusted_identity(leaf: x509.Certificate, identities: Sequence[str]) -> str | None:
    if "*" in identities:
        return "*"
    try:
        subject = _attributes(leaf.subject, what="signing certificate subject", error=ValueError)
    except ValueError:
        return None  # a subject Notation cannot read matches no identity
    for identity in identities:
        wanted = parse_identity(identity)
        if all(subject.get(key) == value for key, value in wanted.items()):
            return identity
    return None


def _names_revocation_endpoints(certificate: x509.Certificate) -> bool:
    if _extension(certificate, x509.CRLDistributionPoints) is not None:
        return True
    access = _extension(certificate, x509.AuthorityInformationAccess)
    return access is not None and any(
        description.access_method == AuthorityInformationAccessOID.OCSP for description in access
    )


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()
