"""Legacy cosign signatures: simple-signing payloads in ``sha256-<hex>.sig`` manifests.

Each layer of a signature manifest is one signature: the layer blob is the simple-signing JSON
payload, its annotations carry the signature and, for keyless signatures, the Fulcio certificate,
its chain and the Rekor bundle (a Signed Entry Timestamp, SET). Everything here is pure: the
registry client hands over the manifest and the blobs, and trust material arrives as bytes.

A signature counts only if the payload names exactly the image digest being admitted.
Every failure raises :class:`Rejected` with one readable sentence; nothing passes by default.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification as x509_verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from muster.kernel import messages, references
from muster.signatures.rules import keys

__all__ = [
    "BUNDLE_ANNOTATION",
    "CERTIFICATE_ANNOTATION",
    "CHAIN_ANNOTATION",
    "SIGNATURE_ANNOTATION",
    "SIMPLE_SIGNING_MEDIA_TYPE",
    "SIMPLE_SIGNING_TYPE",
    "TIMESTAMP_ANNOTATION",
    "CertificateAuthority",
    "CertificateIdentity",
    "Identity",
    "InvalidPolicy",
    "InvalidTrustMaterial",
    "KeyAuthority",
    "KeylessAuthority",
    "LogKey",
    "Payload",
    "Rejected",
    "SignatureLayer",
    "TrustMaterial",
    "Verified",
    "certificate_identity",
    "check_digest",
    "parse_manifest",
    "parse_payload",
    "verify",
    "verify_certificate",
    "verify_keyless",
    "verify_with_key",
]

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
TIMESTAMP_ANNOTATION = "dev.sigstore.cosign/rfc3161timestamp"

MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_LAYERS = 256

_MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_DIGEST = re.compile(r"^(sha256|sha384|sha512):([a-f0-9]+)$")

# Fulcio's certificate extensions, https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
_ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_OTHERNAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")


class Rejected(ValueError):
    """A signature that does not count, and the one sentence that says why."""


class InvalidPolicy(ValueError):
    """An identity or authority that cannot be used as written."""


class InvalidTrustMaterial(ValueError):
    """A trusted root, CA certificate or log key that cannot be used."""


# ---------------------------------------------------------------------------------------------
# Identities


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """Who a Fulcio certificate was issued to: the OIDC issuer and the subject names (SANs)."""

    issuer: str | None
    subjects: tuple[str, ...]

    def __str__(self) -> str:
        subjects = ", ".join(self.subjects) or "no subject"
        return f"{subjects} (issuer {self.issuer or 'unknown'})"


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

    def matches(self, identity: CertificateIdentity) -> bool:
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


def certificate_identity(certificate: x509.Certificate) -> CertificateIdentity:
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
    return CertificateIdentity(issuer=issuer, subjects=tuple(subjects))


def _extensions(certificate: x509.Certificate) -> Iterable[x509.Extension[x509.ExtensionType]]:
    try:
        return list(certificate.extensions)
    except ValueError as error:  # duplicate or malformed extensions
        raise Rejected(f"signing certificate has malformed extensions: {error}") from None


# ---------------------------------------------------------------------------------------------
# Trust material


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A Fulcio CA: its certificates (root last) and when it may have issued certificates."""

    certificates: tuple[x509.Certificate, ...]
    valid_from: datetime.datetime | None = None
    valid_until: datetime.datetime | None = None

    def valid_at(self, when: datetime.datetime) -> bool:
        return _within(when, self.valid_from, self.valid_until)


@dataclasses.dataclass(frozen=True, slots=True)
class LogKey:
    """A transparency log's (Rekor's or a CT log's) public key and its validity window."""

    key: keys.PublicKey
    valid_from: datetime.datetime | None = None
    valid_until: datetime.datetime | None = None

    @property
    def log_id(self) -> str:
        return keys.fingerprint(self.key)

    def valid_at(self, when: datetime.datetime) -> bool:
        return _within(when, self.valid_from, self.valid_until)


def _within(
    when: datetime.datetime, start: datetime.datetime | None, end: datetime.datetime | None
) -> bool:
    # Validity windows are closed intervals (protobuf-specs TimeRange).
    return (start is None or start <= when) and (end is None or when <= end)


@dataclasses.dataclass(frozen=True, slots=True)
class TrustMaterial:
    """What keyless verification trusts: Fulcio CAs, Rekor keys and CT log keys."""

    authorities: tuple[CertificateAuthority, ...]
    rekor_keys: tuple[LogKey, ...]
    ct_keys: tuple[LogKey, ...] = ()

    def __post_init__(self) -> None:
        if not self.authorities:
            raise InvalidTrustMaterial("trust material has no Fulcio certificate authority")
        if not self.rekor_keys:
            raise InvalidTrustMaterial("trust material has no Rekor public key")

    @classmethod
    def from_pem(
        cls,
        *,
        fulcio: Sequence[bytes | str],
        rekor: Sequence[bytes | str],
        ct: Sequence[bytes | str] = (),
    ) -> TrustMaterial:
        """Trust material from PEM CA certificates and PEM log keys (no validity windows)."""
        authorities = tuple(
            CertificateAuthority(certificates=_load_certificates(pem, "Fulcio CA"))
            for pem in fulcio
        )
        return cls(
            authorities=authorities,
            rekor_keys=tuple(LogKey(key=_load_log_key(pem, "Rekor")) for pem in rekor),
            ct_keys=tuple(LogKey(key=_load_log_key(pem, "CT log")) for pem in ct),
        )

    @classmethod
    def from_trusted_root(cls, data: bytes | str) -> TrustMaterial:
        """Trust material from a Sigstore ``trusted_root.json`` document."""
        from sigstore_models.trustroot.v1 import TrustedRoot

        try:
            root = TrustedRoot.from_json(data)
        except ValueError as error:
            raise InvalidTrustMaterial(
                f"trusted root is invalid: {messages.first_line(error)}"
            ) from None
        if not root.media_type.startswith("application/vnd.dev.sigstore.trustedroot"):
            raise InvalidTrustMaterial(f"trusted root has media type {root.media_type!r}")
        authorities = []
        for authority in root.certificate_authorities:
            certificates = tuple(
                _load_der_certificate(cert.raw_bytes) for cert in authority.cert_chain.certificates
            )
            if not certificates:
                continue
            authorities.append(
                CertificateAuthority(
                    certificates=certificates,
                    valid_from=authority.valid_for.start,
                    valid_until=authority.valid_for.end,
                )
            )

        def log_keys(logs: Sequence[Any], what: str) -> tuple[LogKey, ...]:
            found = []
            for log in logs:
                public = log.public_key
                if public.raw_bytes is None:
                    continue
                window = public.valid_for
                found.append(
                    LogKey(
                        key=_load_log_key(public.raw_bytes, what),
                        valid_from=window.start if window else None,
                        valid_until=window.end if window else None,
                    )
                )
            return tuple(found)

        return cls(
            authorities=tuple(authorities),
            rekor_keys=log_keys(root.tlogs, "Rekor"),
            ct_keys=log_keys(root.ctlogs, "CT log"),
        )


def _load_log_key(data: bytes | str, what: str) -> keys.PublicKey:
    try:
        return keys.load(data)
    except keys.InvalidKey as error:
        raise InvalidTrustMaterial(f"{what} key: {error}") from None


def _load_der_certificate(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise InvalidTrustMaterial(
            f"certificate is invalid: {messages.first_line(error)}"
        ) from None


def _load_certificates(data: bytes | str, what: str) -> tuple[x509.Certificate, ...]:
    raw = data.encode() if isinstance(data, str) else data
    try:
        certificates = tuple(x509.load_pem_x509_certificates(raw))
    except ValueError as error:
        raise InvalidTrustMaterial(f"{what} PEM is invalid: {messages.first_line(error)}") from None
    if not certificates:
        raise InvalidTrustMaterial(f"{what} PEM holds no certificate")
    return certificates


# ---------------------------------------------------------------------------------------------
# Payloads and signature manifests


@dataclasses.dataclass(frozen=True, slots=True)
class Payload:
    """The claims of a simple-signing payload."""

    docker_reference: str
    digest: str
    optional: Mapping[str, object] | None = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Different JSON parsers pick different duplicates; a signed payload must be unambiguous.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise Rejected(f"payload repeats the key {key!r}")
        result[key] = value
    return result


def _loads(data: bytes, what: str) -> object:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as error:
        if isinstance(error, Rejected):
            raise Rejected(f"{what}: {error}") from None
        raise Rejected(f"{what} is not valid JSON") from None


def check_digest(digest: str, what: str = "digest") -> str:
    """Return ``digest`` if it is ``algorithm:hex`` of the right length, else reject it."""
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise Rejected(f"{what} {digest!r} is not of the form sha256:<hex>")
    algorithm, hexpart = match.groups()
    if len(hexpart) != references.DIGEST_ALGORITHMS[algorithm]:
        raise Rejected(f"{what} {digest!r} has the wrong length for {algorithm}")
    return digest


def parse_payload(data: bytes) -> Payload:
    """Parse and validate a simple-signing payload."""
    if not isinstance(data, bytes | bytearray):
        raise Rejected("payload must be bytes")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise Rejected(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    document = _loads(bytes(data), "payload")
    if not isinstance(document, dict):
        raise Rejected("payload is not a JSON object")
    critical = document.get("critical")
    if not isinstance(critical, dict):
        raise Rejected("payload has no 'critical' object")
    kind = critical.get("type")
    if kind != SIMPLE_SIGNING_TYPE:
        raise Rejected(f"payload critical.type is {kind!r}, not {SIMPLE_SIGNING_TYPE!r}")
    identity = critical.get("identity")
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    if not isinstance(reference, str) or not reference:
        raise Rejected("payload has no critical.identity.docker-reference")
    try:
        references.parse(reference)
    except references.InvalidReference as error:
        raise Rejected(f"payload docker-reference is invalid: {error}") from None
    image = critical.get("image")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str):
        raise Rejected("payload has no critical.image.docker-manifest-digest")
    check_digest(digest, "payload docker-manifest-digest")
    optional = document.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise Rejected("payload 'optional' is neither an object nor null")
    return Payload(docker_reference=reference, digest=digest, optional=optional)


@dataclasses.dataclass(frozen=True, slots=True)
class SignatureLayer:
    """One layer of a signature manifest; ``problem`` says why it cannot count, if it cannot."""

    index: int
    payload: bytes = b""
    signature: bytes = b""
    certificate: bytes | None = None
    chain: bytes | None = None
    rekor_bundle: bytes | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        return f"signature {self.index + 1}"


def _manifest(manifest: Mapping[str, object] | bytes | str) -> Mapping[str, object]:
    if isinstance(manifest, str):
        manifest = manifest.encode()
    if isinstance(manifest, bytes | bytearray):
        document = _loads(bytes(manifest), "signature manifest")
        if not isinstance(document, dict):
            raise Rejected("signature manifest is not a JSON object")
        return document
    if not isinstance(manifest, Mapping):
        raise Rejected("signature manifest must be a JSON object")
    return manifest


def parse_manifest(
    manifest: Mapping[str, object] | bytes | str, blobs: Mapping[str, bytes]
) -> tuple[SignatureLayer, ...]:
    """Split a signature manifest into its signature layers (payload bytes from ``blobs``)."""
    document = _manifest(manifest)
    media_type = document.get("mediaType")
    if media_type is not None and media_type not in _MANIFEST_MEDIA_TYPES:
        raise Rejected(f"signature manifest has media type {media_type!r}")
    layers = document.get("layers")
    if not isinstance(layers, list) or not layers:
        raise Rejected("signature manifest has no layers")
    if len(layers) > MAX_LAYERS:
        raise Rejected(f"signature manifest has more than {MAX_LAYERS} layers")
    return tuple(_layer(index, layer, blobs) for index, layer in enumerate(layers))


def _layer(index: int, layer: object, blobs: Mapping[str, bytes]) -> SignatureLayer:
    def problem(text: str) -> SignatureLayer:
        return SignatureLayer(index=index, problem=text)

    if not isinstance(layer, Mapping):
        return problem("layer is not an object")
    if layer.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
        return problem(f"layer media type {layer.get('mediaType')!r} is not simple signing")
    digest = layer.get("digest")
    if not isinstance(digest, str):
        return problem("layer has no digest")
    try:
        check_digest(digest, "layer digest")
    except Rejected as error:
        return problem(str(error))
    payload = blobs.get(digest)
    if not isinstance(payload, bytes | bytearray):
        return problem(f"payload blob {digest} is missing")
    algorithm, _, expected = digest.partition(":")
    if hashlib.new(algorithm, payload).hexdigest() != expected:
        return problem(f"payload blob does not match its digest {digest}")
    size = layer.get("size")
    # OCI descriptors must state the size; a registry client caps reads by it.
    if not _is_int(size) or size != len(payload):
        return problem(f"payload blob is {len(payload)} bytes, the manifest says {size!r}")
    annotations = layer.get("annotations")
    if not isinstance(annotations, Mapping):
        return problem("layer has no annotations (no signature)")
    encoded = annotations.get(SIGNATURE_ANNOTATION)
    if not isinstance(encoded, str) or not encoded:
        return problem(f"layer has no {SIGNATURE_ANNOTATION} annotation")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return problem("signature annotation is not valid base64")
    texts: dict[str, bytes | None] = {}
    for name in (CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, BUNDLE_ANNOTATION):
        value = annotations.get(name)
        if value is not None and not isinstance(value, str):
            return problem(f"annotation {name} is not a string")
        texts[name] = value.encode() if value else None
    return SignatureLayer(
        index=index,
        payload=bytes(payload),
        signature=signature,
        certificate=texts[CERTIFICATE_ANNOTATION],
        chain=texts[CHAIN_ANNOTATION],
        rekor_bundle=texts[BUNDLE_ANNOTATION],
    )


# ---------------------------------------------------------------------------------------------
# Verification


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    """A signature that counts: who signed which digest, and when the log saw it."""

    digest: str
    signer: str
    authority: str = ""
    docker_reference: str | None = None
    integrated_time: datetime.datetime | None = None
    log_index: int | None = None
    sct_checked: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class KeyAuthority:
    """Signatures by one public key; with ``rekor_keys`` a verified Rekor entry is required."""

    name: str
    key: keys.PublicKey
    rekor_keys: tuple[LogKey, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class KeylessAuthority:
    """Fulcio-certified signatures by any of ``identities``, checked against ``trust``."""

    name: str
    identities: tuple[Identity, ...]
    trust: TrustMaterial

    def __post_init__(self) -> None:
        if not self.identities:
            raise InvalidPolicy(f"keyless authority {self.name!r} lists no identity")


def _check_payload(layer: SignatureLayer, digest: str) -> Payload:
    payload = parse_payload(layer.payload)
    if payload.digest != digest:
        raise Rejected(f"payload signs {payload.digest}, not the image digest {digest}")
    return payload


@dataclasses.dataclass(frozen=True, slots=True)
class _LogEntry:
    integrated_time: datetime.datetime
    log_index: int


def _verify_rekor_bundle(
    layer: SignatureLayer, rekor_keys: Sequence[LogKey], signer_pem: bytes
) -> _LogEntry:
    """Check the SET over the Rekor entry and that the entry records exactly this signature."""
    if layer.rekor_bundle is None:
        raise Rejected(f"no Rekor bundle ({BUNDLE_ANNOTATION}), so no transparency log proof")
    document = _loads(layer.rekor_bundle, "Rekor bundle")
    if not isinstance(document, dict):
        raise Rejected("Rekor bundle is not a JSON object")
    payload = document.get("Payload")
    signed = document.get("SignedEntryTimestamp")
    if not isinstance(payload, dict) or not isinstance(signed, str):
        raise Rejected("Rekor bundle lacks Payload or SignedEntryTimestamp")
    body, when, index, log_id = (
        payload.get(name) for name in ("body", "integratedTime", "logIndex", "logID")
    )
    if (
        not isinstance(body, str)
        or not isinstance(log_id, str)
        or not _is_int(when)
        or not _is_int(index)
    ):
        raise Rejected("Rekor bundle Payload lacks body, integratedTime, logIndex or logID")
    try:
        set_signature = base64.b64decode(signed, validate=True)
        body_bytes = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected("Rekor bundle holds invalid base64") from None
    try:
        integrated = datetime.datetime.fromtimestamp(when, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        raise Rejected(f"Rekor integratedTime {when} is out of range") from None
    log_key = next((k for k in rekor_keys if k.log_id == log_id.lower()), None)
    if log_key is None:
        raise Rejected(f"Rekor bundle is from log {log_id[:16]}..., which is not trusted")
    if not log_key.valid_at(integrated):
        raise Rejected("Rekor key was not valid at the entry's integrated time")
    canonical = rfc8785.dumps(
        {"body": body, "integratedTime": when, "logID": log_id, "logIndex": index}
    )
    try:
        keys.verify(log_key.key, set_signature, canonical)
    except keys.InvalidSignature:
        raise Rejected("Rekor SignedEntryTimestamp does not verify with the Rekor key") from None
    _check_hashedrekord(body_bytes, layer, signer_pem)
    return _LogEntry(integrated_time=integrated, log_index=index)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_hashedrekord(body: bytes, layer: SignatureLayer, signer_pem: bytes) -> None:
    entry = _loads(body, "Rekor entry")
    if not isinstance(entry, dict) or entry.get("kind") != "hashedrekord":
        raise Rejected("Rekor entry is not a hashedrekord entry")
    if entry.get("apiVersion") != "0.0.1":
        raise Rejected(f"Rekor hashedrekord version {entry.get('apiVersion')!r} is not 0.0.1")
    spec = entry.get("spec")
    try:
        data_hash = spec["data"]["hash"]  # type: ignore[index]
        signature = spec["signature"]  # type: ignore[index]
        algorithm, value = data_hash["algorithm"], data_hash["value"]
        content, public = signature["content"], signature["publicKey"]["content"]
    except (KeyError, TypeError):
        raise Rejected("Rekor entry lacks its hash, signature or public key") from None
    if algorithm != "sha256" or value != hashlib.sha256(layer.payload).hexdigest():
        raise Rejected("Rekor entry records a different payload")
    try:
        recorded_signature = base64.b64decode(content, validate=True)
        recorded_signer = base64.b64decode(public, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise Rejected("Rekor entry holds invalid base64") from None
    if recorded_signature != layer.signature:
        raise Rejected("Rekor entry records a different signature")
    if _pem_der(recorded_signer) != _pem_der(signer_pem):
        raise Rejected("Rekor entry records a different signer")


def _pem_der(pem: bytes) -> bytes:
    # Compare what PEM blocks encode, not their line wrapping.
    match = re.search(rb"-----BEGIN [A-Z ]+-----(.*?)-----END", pem, re.DOTALL)
    if match is None:
        return b""
    try:
        return base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return b""


def verify_with_key(
    layer: SignatureLayer,
    key: keys.PublicKey,
    *,
    digest: str,
    rekor_keys: Sequence[LogKey] | None = None,
) -> Verified:
    """Verify one signature layer with a public key (and its Rekor entry if keys are given)."""
    check_digest(digest, "image digest")
    if layer.problem is not None:
        raise Rejected(layer.problem)
    try:
        keys.verify(key, layer.signature, layer.payload)
    except keys.InvalidSignature as error:
        raise Rejected(str(error)) from None
    payload = _check_payload(layer, digest)
    entry = None
    if rekor_keys is not None:
        entry = _verify_rekor_bundle(layer, rekor_keys, keys.pem(key))
    return Verified(
        digest=digest,
        signer=keys.describe(key),
        docker_reference=payload.docker_reference,
        integrated_time=entry.integrated_time if entry else None,
        log_index=entry.log_index if entry else None,
    )


def verify_certificate(
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    when: datetime.datetime,
    authorities: Sequence[CertificateAuthority],
) -> tuple[x509.Certificate, ...]:
    """Check that ``certificate`` chains to a Fulcio CA valid at ``when``; return the chain."""
    anchors = [
        cert
        for authority in authorities
        if authority.valid_at(when)
        for cert in authority.certificates
    ]
    if not anchors:
        raise Rejected("no trusted Fulcio CA was valid at the signing time")
    # Fulcio certificates carry the code-signing EKU, not client-auth: allow any EKU here and
    # require code signing below, as Sigstore clients do.
    ca_policy = x509_verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, x509_verification.Criticality.NON_CRITICAL, None
    )
    ee_policy = x509_verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, x509_verification.Criticality.NON_CRITICAL, None
    )
    verifier = (
        x509_verification.PolicyBuilder()
        .store(x509_verification.Store(anchors))
        .time(when)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(certificate, list(chain))
    except (x509_verification.VerificationError, x509.UnsupportedGeneralNameType) as error:
        raise Rejected(f"signing certificate does not chain to a trusted CA: {error}") from None
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise Rejected("signing certificate has no extended key usage") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in usage:
        raise Rejected("signing certificate is not for code signing")
    return tuple(verified.chain)


def _verify_sct(
    certificate: x509.Certificate, issuer: x509.Certificate, ct_keys: Sequence[LogKey]
) -> None:
    """Check an embedded SCT: the CT log promised to publish this certificate."""
    try:
        scts = certificate.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps
        ).value
    except x509.ExtensionNotFound:
        raise Rejected("signing certificate has no embedded SCT") from None
    issuer_key_hash = hashlib.sha256(keys.der(issuer.public_key())).digest()  # type: ignore[arg-type]
    tbs = certificate.tbs_precertificate_bytes
    for sct in scts:
        log_key = next((k for k in ct_keys if bytes.fromhex(k.log_id) == sct.log_id), None)
        if log_key is None:
            continue
        stamp = sct.timestamp.replace(tzinfo=datetime.UTC)
        millis = (stamp - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)) // (
            datetime.timedelta(milliseconds=1)
        )
        extensions = sct.extension_bytes
        signed = (
            b"\x00\x00"  # v1, certificate_timestamp
            + millis.to_bytes(8, "big")
            + b"\x00\x01"  # precert_entry
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + len(extensions).to_bytes(2, "big")
            + extensions
        )
        try:
            keys.verify(log_key.key, sct.signature, signed, algorithms=[hashes.SHA256])
            return
        except keys.InvalidSignature:
            continue
    raise Rejected("no embedded SCT verifies with a trusted CT log key")


def verify_keyless(
    layer: SignatureLayer,
    *,
    digest: str,
    identities: Sequence[Identity],
    trust: TrustMaterial,
) -> Verified:
    """Verify one keyless signature layer: certificate, Rekor SET, identity, signature."""
    check_digest(digest, "image digest")
    if layer.problem is not None:
        raise Rejected(layer.problem)
    if not identities:
        raise Rejected("no identity is trusted, so no keyless signature can count")
    if layer.certificate is None:
        raise Rejected(f"no signing certificate ({CERTIFICATE_ANNOTATION})")
    try:
        leaf = x509.load_pem_x509_certificate(layer.certificate)
        chain = x509.load_pem_x509_certificates(layer.chain) if layer.chain else []
    except ValueError as error:
        raise Rejected(f"signing certificate is invalid: {messages.first_line(error)}") from None
    # The Rekor entry fixes the signing time; the short-lived certificate must cover it.
    entry = _verify_rekor_bundle(layer, trust.rekor_keys, layer.certificate)
    if not leaf.not_valid_before_utc <= entry.integrated_time <= leaf.not_valid_after_utc:
        raise Rejected("signing certificate was not valid when Rekor logged the signature")
    verified_chain = verify_certificate(
        leaf, chain, when=entry.integrated_time, authorities=trust.authorities
    )
    if trust.ct_keys:
        if len(verified_chain) < 2:
            raise Rejected("signing certificate has no issuer to check its SCT against")
        _verify_sct(leaf, verified_chain[1], trust.ct_keys)
    identity = certificate_identity(leaf)
    if not any(expected.matches(identity) for expected in identities):
        expected_text = "; ".join(str(expected) for expected in identities)
        raise Rejected(f"signed by {identity}, expected {expected_text}")
    public = leaf.public_key()
    if not isinstance(public, keys.PublicKey):
        raise Rejected("signing certificate holds an unsupported key type")
    try:
        keys.verify(public, layer.signature, layer.payload)
    except keys.InvalidSignature:
        raise Rejected("signature does not verify with the signing certificate") from None
    payload = _check_payload(layer, digest)
    return Verified(
        digest=digest,
        signer=str(identity),
        docker_reference=payload.docker_reference,
        integrated_time=entry.integrated_time,
        log_index=entry.log_index,
        sct_checked=bool(trust.ct_keys),
    )


def verify(
    manifest: Mapping[str, object] | bytes | str,
    blobs: Mapping[str, bytes],
    *,
    digest: str,
    authority: KeyAuthority | KeylessAuthority,
) -> Verified:
    """The first signature in ``manifest`` that ``authority`` vouches for, or :class:`Rejected`."""
    check_digest(digest, "image digest")
    reasons = []
    for layer in parse_manifest(manifest, blobs):
        try:
            if isinstance(authority, KeyAuthority):
                result = verify_with_key(
                    layer, authority.key, digest=digest, rekor_keys=authority.rekor_keys
                )
            else:
                result = verify_keyless(
                    layer, digest=digest, identities=authority.identities, trust=authority.trust
                )
        except Rejected as error:
            reasons.append(f"{layer.name}: {error}")
            continue
        return dataclasses.replace(result, authority=authority.name)
    raise Rejected(f"no signature by {authority.name} counts ({'; '.join(reasons)})")
