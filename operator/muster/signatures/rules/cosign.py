"""Legacy cosign signatures: simple-signing payloads in ``sha256-<hex>.sig`` manifests.

Each layer of a signature manifest is one signature: the layer blob is the simple-signing JSON
payload, its annotations carry the signature and, for keyless signatures, the Fulcio certificate,
its chain and the Rekor bundle (a Signed Entry Timestamp, SET). Everything here is pure: the
registry client hands over the manifest and the blobs, and trust material arrives as bytes.

A signature counts only if the payload names exactly the image digest being admitted.
Every failure raises :class:`proofs.Rejected` with one readable sentence; nothing passes by default.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification as x509_verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from muster.kernel import messages, references
from muster.signatures.rules import authorities, keys, proofs
from muster.signatures.rules import trust as roots

__all__ = [
    "BUNDLE_ANNOTATION",
    "CERTIFICATE_ANNOTATION",
    "CHAIN_ANNOTATION",
    "FORMAT",
    "SIGNATURE_ANNOTATION",
    "SIMPLE_SIGNING_MEDIA_TYPE",
    "SIMPLE_SIGNING_TYPE",
    "TIMESTAMP_ANNOTATION",
    "BodyCheck",
    "LegacySignature",
    "Payload",
    "SignatureLayer",
    "check_digest",
    "parse_manifest",
    "parse_payload",
    "verify",
    "verify_certificate",
    "verify_certified",
    "verify_keyless",
    "verify_logged",
    "verify_with_key",
]

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
TIMESTAMP_ANNOTATION = "dev.sigstore.cosign/rfc3161timestamp"

FORMAT_NAME = "cosign-legacy"
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_LAYERS = 256

_MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_DIGEST = re.compile(r"^(sha256|sha384|sha512):([a-f0-9]+)$")

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
            raise proofs.Rejected(f"payload repeats the key {key!r}")
        result[key] = value
    return result


def _loads(data: bytes, what: str) -> object:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as error:
        if isinstance(error, proofs.Rejected):
            raise proofs.Rejected(f"{what}: {error}") from None
        raise proofs.Rejected(f"{what} is not valid JSON") from None


def check_digest(digest: str, what: str = "digest") -> str:
    """Return ``digest`` if it is ``algorithm:hex`` of the right length, else reject it."""
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise proofs.Rejected(f"{what} {digest!r} is not of the form sha256:<hex>")
    algorithm, hexpart = match.groups()
    if len(hexpart) != references.DIGEST_ALGORITHMS[algorithm]:
        raise proofs.Rejected(f"{what} {digest!r} has the wrong length for {algorithm}")
    return digest


def parse_payload(data: bytes) -> Payload:
    """Parse and validate a simple-signing payload."""
    if not isinstance(data, bytes | bytearray):
        raise proofs.Rejected("payload must be bytes")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise proofs.Rejected(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    document = _loads(bytes(data), "payload")
    if not isinstance(document, dict):
        raise proofs.Rejected("payload is not a JSON object")
    critical = document.get("critical")
    if not isinstance(critical, dict):
        raise proofs.Rejected("payload has no 'critical' object")
    kind = critical.get("type")
    if kind != SIMPLE_SIGNING_TYPE:
        raise proofs.Rejected(f"payload critical.type is {kind!r}, not {SIMPLE_SIGNING_TYPE!r}")
    identity = critical.get("identity")
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    if not isinstance(reference, str) or not reference:
        raise proofs.Rejected("payload has no critical.identity.docker-reference")
    try:
        references.parse(reference)
    except references.InvalidReference as error:
        raise proofs.Rejected(f"payload docker-reference is invalid: {error}") from None
    image = critical.get("image")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str):
        raise proofs.Rejected("payload has no critical.image.docker-manifest-digest")
    check_digest(digest, "payload docker-manifest-digest")
    optional = document.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise proofs.Rejected("payload 'optional' is neither an object nor null")
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
            raise proofs.Rejected("signature manifest is not a JSON object")
        return document
    if not isinstance(manifest, Mapping):
        raise proofs.Rejected("signature manifest must be a JSON object")
    return manifest


def parse_manifest(
    manifest: Mapping[str, object] | bytes | str, blobs: Mapping[str, bytes]
) -> tuple[SignatureLayer, ...]:
    """Split a signature manifest into its signature layers (payload bytes from ``blobs``)."""
    document = _manifest(manifest)
    media_type = document.get("mediaType")
    if media_type is not None and media_type not in _MANIFEST_MEDIA_TYPES:
        raise proofs.Rejected(f"signature manifest has media type {media_type!r}")
    layers = document.get("layers")
    if not isinstance(layers, list) or not layers:
        raise proofs.Rejected("signature manifest has no layers")
    if len(layers) > MAX_LAYERS:
        raise proofs.Rejected(f"signature manifest has more than {MAX_LAYERS} layers")
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
    except proofs.Rejected as error:
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


def _check_payload(layer: SignatureLayer, digest: str) -> Payload:
    payload = parse_payload(layer.payload)
    if payload.digest != digest:
        raise proofs.Rejected(f"payload signs {payload.digest}, not the image digest {digest}")
    return payload


@dataclasses.dataclass(frozen=True, slots=True)
class _LogEntry:
    integrated_time: datetime.datetime
    log_index: int


# Checks that a Rekor entry's body records this layer's signature by this signer.
BodyCheck = Callable[[bytes, "SignatureLayer", bytes], None]


def _verify_rekor_bundle(
    layer: SignatureLayer,
    rekor_keys: Sequence[roots.LogKey],
    signer_pem: bytes,
    check_body: BodyCheck | None = None,
) -> _LogEntry:
    """Check the SET over the Rekor entry and that the entry records exactly this signature
    (a hashedrekord entry of the payload, unless ``check_body`` checks another kind)."""
    if layer.rekor_bundle is None:
        raise proofs.Rejected(
            f"no Rekor bundle ({BUNDLE_ANNOTATION}), so no transparency log proof"
        )
    document = _loads(layer.rekor_bundle, "Rekor bundle")
    if not isinstance(document, dict):
        raise proofs.Rejected("Rekor bundle is not a JSON object")
    payload = document.get("Payload")
    signed = document.get("SignedEntryTimestamp")
    if not isinstance(payload, dict) or not isinstance(signed, str):
        raise proofs.Rejected("Rekor bundle lacks Payload or SignedEntryTimestamp")
    body, when, index, log_id = (
        payload.get(name) for name in ("body", "integratedTime", "logIndex", "logID")
    )
    if (
        not isinstance(body, str)
        or not isinstance(log_id, str)
        or not _is_int(when)
        or not _is_int(index)
    ):
        raise proofs.Rejected("Rekor bundle Payload lacks body, integratedTime, logIndex or logID")
    try:
        set_signature = base64.b64decode(signed, validate=True)
        body_bytes = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise proofs.Rejected("Rekor bundle holds invalid base64") from None
    try:
        integrated = datetime.datetime.fromtimestamp(when, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        raise proofs.Rejected(f"Rekor integratedTime {when} is out of range") from None
    log_key = next((k for k in rekor_keys if k.log_id == log_id.lower()), None)
    if log_key is None:
        raise proofs.Rejected(f"Rekor bundle is from log {log_id[:16]}..., which is not trusted")
    if not log_key.valid_at(integrated):
        raise proofs.Rejected("Rekor key was not valid at the entry's integrated time")
    canonical = rfc8785.dumps(
        {"body": body, "integratedTime": when, "logID": log_id, "logIndex": index}
    )
    try:
        keys.verify(log_key.key, set_signature, canonical)
    except keys.InvalidSignature:
        raise proofs.Rejected(
            "Rekor SignedEntryTimestamp does not verify with the Rekor key"
        ) from None
    (check_body or _check_hashedrekord)(body_bytes, layer, signer_pem)
    return _LogEntry(integrated_time=integrated, log_index=index)


def verify_logged(
    layer: SignatureLayer,
    rekor_keys: Sequence[roots.LogKey],
    signer_pem: bytes,
    *,
    check_body: BodyCheck,
) -> tuple[datetime.datetime, int]:
    """The Rekor SET of a layer signed by ``signer_pem`` (a key or a certificate), its entry
    checked by ``check_body``: (integrated time, log index), or :class:`proofs.Rejected`."""
    entry = _verify_rekor_bundle(layer, rekor_keys, signer_pem, check_body)
    return entry.integrated_time, entry.log_index


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_hashedrekord(body: bytes, layer: SignatureLayer, signer_pem: bytes) -> None:
    entry = _loads(body, "Rekor entry")
    if not isinstance(entry, dict) or entry.get("kind") != "hashedrekord":
        raise proofs.Rejected("Rekor entry is not a hashedrekord entry")
    if entry.get("apiVersion") != "0.0.1":
        raise proofs.Rejected(
            f"Rekor hashedrekord version {entry.get('apiVersion')!r} is not 0.0.1"
        )
    spec = entry.get("spec")
    try:
        data_hash = spec["data"]["hash"]  # type: ignore[index]
        signature = spec["signature"]  # type: ignore[index]
        algorithm, value = data_hash["algorithm"], data_hash["value"]
        content, public = signature["content"], signature["publicKey"]["content"]
    except (KeyError, TypeError):
        raise proofs.Rejected("Rekor entry lacks its hash, signature or public key") from None
    if algorithm != "sha256" or value != hashlib.sha256(layer.payload).hexdigest():
        raise proofs.Rejected("Rekor entry records a different payload")
    try:
        recorded_signature = base64.b64decode(content, validate=True)
        recorded_signer = base64.b64decode(public, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise proofs.Rejected("Rekor entry holds invalid base64") from None
    if recorded_signature != layer.signature:
        raise proofs.Rejected("Rekor entry records a different signature")
    if _pem_der(recorded_signer) != _pem_der(signer_pem):
        raise proofs.Rejected("Rekor entry records a different signer")


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
    rekor_keys: Sequence[roots.LogKey] | None = None,
) -> proofs.Proof:
    """Verify one signature layer with a public key (and its Rekor entry if keys are given)."""
    check_digest(digest, "image digest")
    if layer.problem is not None:
        raise proofs.Rejected(layer.problem)
    try:
        keys.verify(key, layer.signature, layer.payload)
    except keys.InvalidSignature as error:
        raise proofs.Rejected(str(error)) from None
    payload = _check_payload(layer, digest)
    entry = None
    if rekor_keys is not None:
        entry = _verify_rekor_bundle(layer, rekor_keys, keys.pem(key))
    return proofs.Proof(
        digest=digest,
        signer=keys.describe(key),
        format=FORMAT_NAME,
        key_id=keys.fingerprint(key),
        docker_reference=payload.docker_reference,
        integrated_time=entry.integrated_time if entry else None,
        log_index=entry.log_index if entry else None,
    )


def verify_certificate(
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    when: datetime.datetime,
    authorities: Sequence[roots.CertificateAuthority],
) -> tuple[x509.Certificate, ...]:
    """Check that ``certificate`` chains to a Fulcio CA valid at ``when``; return the chain."""
    anchors = [
        cert
        for authority in authorities
        if authority.valid_at(when)
        for cert in authority.certificates
    ]
    if not anchors:
        raise proofs.Rejected("no trusted Fulcio CA was valid at the signing time")
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
        raise proofs.Rejected(
            f"signing certificate does not chain to a trusted CA: {error}"
        ) from None
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise proofs.Rejected("signing certificate has no extended key usage") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in usage:
        raise proofs.Rejected("signing certificate is not for code signing")
    return tuple(verified.chain)


def _verify_sct(
    certificate: x509.Certificate, issuer: x509.Certificate, ct_keys: Sequence[roots.LogKey]
) -> None:
    """Check an embedded SCT: the CT log promised to publish this certificate."""
    try:
        scts = certificate.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps
        ).value
    except x509.ExtensionNotFound:
        raise proofs.Rejected("signing certificate has no embedded SCT") from None
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
    raise proofs.Rejected("no embedded SCT verifies with a trusted CT log key")


def verify_keyless(
    layer: SignatureLayer,
    *,
    digest: str,
    identities: Sequence[authorities.Identity],
    trust: roots.TrustMaterial,
) -> proofs.Proof:
    """Verify one keyless signature layer: certificate, Rekor SET, identity, signature."""
    check_digest(digest, "image digest")
    identity, integrated_time, log_index = verify_certified(
        layer, identities=identities, trust=trust, message=layer.payload
    )
    payload = _check_payload(layer, digest)
    return proofs.Proof(
        digest=digest,
        signer=str(identity),
        format=FORMAT_NAME,
        identity=identity,
        docker_reference=payload.docker_reference,
        integrated_time=integrated_time,
        log_index=log_index,
        sct_checked=bool(trust.ct_keys),
    )


def verify_certified(
    layer: SignatureLayer,
    *,
    identities: Sequence[authorities.Identity],
    trust: roots.TrustMaterial,
    message: bytes,
    check_body: BodyCheck | None = None,
) -> tuple[proofs.CertificateIdentity, datetime.datetime, int]:
    """Verify a layer's certificate, Rekor SET (its entry checked by ``check_body``, a
    hashedrekord entry by default), identity and signature over ``message``: who signed, and
    when and where Rekor logged it."""
    if layer.problem is not None:
        raise proofs.Rejected(layer.problem)
    if not identities:
        raise proofs.Rejected("no identity is trusted, so no keyless signature can count")
    if layer.certificate is None:
        raise proofs.Rejected(f"no signing certificate ({CERTIFICATE_ANNOTATION})")
    try:
        leaf = x509.load_pem_x509_certificate(layer.certificate)
        chain = x509.load_pem_x509_certificates(layer.chain) if layer.chain else []
    except ValueError as error:
        raise proofs.Rejected(
            f"signing certificate is invalid: {messages.first_line(error)}"
        ) from None
    # The Rekor entry fixes the signing time; the short-lived certificate must cover it.
    entry = _verify_rekor_bundle(layer, trust.rekor_keys, layer.certificate, check_body)
    if not leaf.not_valid_before_utc <= entry.integrated_time <= leaf.not_valid_after_utc:
        raise proofs.Rejected("signing certificate was not valid when Rekor logged the signature")
    verified_chain = verify_certificate(
        leaf, chain, when=entry.integrated_time, authorities=trust.authorities
    )
    if trust.ct_keys:
        if len(verified_chain) < 2:
            raise proofs.Rejected("signing certificate has no issuer to check its SCT against")
        _verify_sct(leaf, verified_chain[1], trust.ct_keys)
    identity = authorities.certificate_identity(leaf)
    if not any(expected.matches(identity) for expected in identities):
        expected_text = "; ".join(str(expected) for expected in identities)
        raise proofs.Rejected(f"signed by {identity}, expected {expected_text}")
    public = leaf.public_key()
    if not isinstance(public, keys.PublicKey):
        raise proofs.Rejected("signing certificate holds an unsupported key type")
    try:
        keys.verify(public, layer.signature, message)
    except keys.InvalidSignature:
        raise proofs.Rejected("signature does not verify with the signing certificate") from None
    return identity, entry.integrated_time, entry.log_index


def verify(
    manifest: Mapping[str, object] | bytes | str,
    blobs: Mapping[str, bytes],
    *,
    digest: str,
    authority: authorities.Authority,
) -> proofs.Proof:
    """The first signature in ``manifest`` that ``authority`` vouches for, or
    :class:`proofs.Rejected`."""
    check_digest(digest, "image digest")
    authority = authorities.not_notation(authority, "cosign signatures")
    reasons = []
    for layer in parse_manifest(manifest, blobs):
        try:
            if isinstance(authority, authorities.KeyAuthority):
                root = authority.trusted_root
                result = verify_with_key(
                    layer,
                    authority.key,
                    digest=digest,
                    rekor_keys=root.material.rekor_keys if root is not None else None,
                )
            else:
                result = verify_keyless(
                    layer,
                    digest=digest,
                    identities=authority.identities,
                    trust=authority.trusted_root.material,
                )
        except proofs.Rejected as error:
            reasons.append(f"{layer.name}: {error}")
            continue
        return dataclasses.replace(result, authority=authority.name)
    raise proofs.Rejected(f"no signature by {authority.name} counts ({'; '.join(reasons)})")


# ---------------------------------------------------------------------------------------------
# The format


@dataclasses.dataclass(frozen=True, slots=True)
class LegacySignature:
    """A ``sha256-<hex>.sig`` manifest and the payload blobs it names, as a registry holds them."""

    manifest: bytes
    blobs: Mapping[str, bytes]


class _Format:
    """Legacy ``.sig`` signatures as a :class:`muster.signatures.rules.formats.Format`."""

    name = FORMAT_NAME

    def label(self, index: int) -> str:
        # One .sig manifest per digest: its layers are numbered inside the reason.
        return "legacy signature"

    def verify(
        self, evidence: object, *, digest: str, authority: authorities.Authority
    ) -> proofs.Proof:
        if not isinstance(evidence, LegacySignature):
            raise proofs.Rejected("evidence is not a legacy signature manifest")
        return verify(evidence.manifest, evidence.blobs, digest=digest, authority=authority)


FORMAT = _Format()
