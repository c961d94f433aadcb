"""Verifying OMS signature files (Sigstore bundles) the three ways ``model_signing`` signs.

- key: the DSSE envelope is signed by an elliptic-curve key (P-256/P-384/P-521, hash by
  curve size); the bundle names the key by the SHA-256 of its PEM as a hint.
- certificate: the same signature, by a leaf certificate whose chain (carried in the
  bundle) must lead to a trusted root given by the verifier.
- sigstore (keyless): a Fulcio certificate with transparency-log proof, checked by the
  ``sigstore`` library against a trusted root and an identity + OIDC issuer policy.

Each returns the signed manifest (``oms.Manifest``); comparing it with the bytes on disk
is ``modelfiles``' job. Pre-1.0 signatures (a different PAE, SHA-256 for every curve in
certificate mode) are accepted exactly where model_signing accepts them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

from muster.signatures import shipped
from muster.signatures.rules import keys, oms, proofs, trust

__all__ = [
    "Check",
    "InputError",
    "SignatureError",
    "Signed",
    "read_bundle",
    "verify_with_certificates",
    "verify_with_key",
    "verify_with_sigstore",
]

_SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
FORMAT_NAME = "oms-bundle"
_MAX_CHAIN = 10


class SignatureError(Exception):
    """The signature does not verify; the message says why."""


class InputError(SignatureError):
    """A signature, key, certificate or trusted root that cannot be read at all."""


@dataclasses.dataclass(frozen=True, slots=True)
class Signed:
    """A verified signature: what it signs, who signed it, and what that proved (the same
    :class:`~muster.signatures.rules.proofs.Proof` an image signature gives)."""

    manifest: oms.Manifest
    signer: str  # key hint, certificate subject, or keyless identity
    proof: proofs.Proof


def _signed(manifest: oms.Manifest, signer: str, **facts: Any) -> Signed:
    proof = proofs.Proof(digest=manifest.digest, signer=signer, format=FORMAT_NAME, **facts)
    return Signed(manifest, signer, proof)


Check = Callable[[Mapping[str, Any]], Signed]


def read_bundle(path: Path) -> dict[str, Any]:
    """Parse a signature file into its bundle JSON; no verification yet."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as error:
        raise InputError(f"{path}: cannot read signature ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: signature is not JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("dsseEnvelope"), dict):
        raise InputError(f"{path}: not a Sigstore bundle with a DSSE envelope")
    return data


def verify_with_key(bundle: Mapping[str, Any], public_key_pem: bytes) -> Signed:
    """Verify a key-signed bundle with an EC public key (PEM)."""
    key = _load_ec_public_key(public_key_pem)
    _check_media_type(bundle)
    material = _object(bundle.get("verificationMaterial"), "verificationMaterial")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fingerprint = hashlib.sha256(pem).hexdigest()
    hint = _object(material.get("publicKey"), "verificationMaterial.publicKey").get("hint")
    # model_signing rejects a bundle that names another key; old bundles carry no hint.
    if hint and hint != fingerprint:
        raise SignatureError(
            "the signature was made with a different key than the one given "
            f"(signature key sha256 {hint}, given {fingerprint})"
        )
    payload_type, payload, signature = _envelope(bundle)
    try:
        key.verify(signature, oms.pae(payload, payload_type), ec.ECDSA(_curve_hash(key)))
    except exceptions.InvalidSignature:
        try:
            key.verify(signature, oms.pae_compat(payload, payload_type), ec.ECDSA(_curve_hash(key)))
        except exceptions.InvalidSignature:
            raise SignatureError("the signature does not verify with the given key") from None
    return _signed(
        _manifest(payload_type, payload), f"key sha256:{fingerprint}", key_id=keys.fingerprint(key)
    )


def verify_with_certificates(bundle: Mapping[str, Any], trusted_pem: bytes) -> Signed:
    """Verify a certificate-signed bundle against trusted CA certificates (PEM)."""
    try:
        anchors = x509.load_pem_x509_certificates(trusted_pem)
    except ValueError as error:
        raise InputError(f"trusted certificates are not PEM ({error})") from None
    _check_media_type(bundle)
    material = _object(bundle.get("verificationMaterial"), "verificationMaterial")
    raw_chain = _object(
        material.get("x509CertificateChain"), "verificationMaterial.x509CertificateChain"
    ).get("certificates")
    if not isinstance(raw_chain, list) or not raw_chain:
        raise SignatureError(
            "the signature carries no certificate chain (not a certificate signature)"
        )
    try:
        chain = [x509.load_der_x509_certificate(_b64(c["rawBytes"])) for c in raw_chain]
    except (KeyError, TypeError, ValueError) as error:
        raise SignatureError(f"the signature's certificate chain is unreadable ({error})") from None
    leaf = chain[0]
    _check_chain(leaf, chain[1:], anchors)
    _check_code_signing(leaf)
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("the signing certificate does not hold an elliptic-curve key")
    payload_type, payload, signature = _envelope(bundle)
    try:
        key.verify(signature, oms.pae(payload, payload_type), ec.ECDSA(_curve_hash(key)))
    except exceptions.InvalidSignature:
        try:
            # pre-1.0 model_signing hashed with SHA-256 whatever the curve.
            key.verify(signature, oms.pae_compat(payload, payload_type), ec.ECDSA(hashes.SHA256()))
        except exceptions.InvalidSignature:
            raise SignatureError(
                "the signature does not verify with the signing certificate"
            ) from None
    return _signed(
        _manifest(payload_type, payload),
        f"certificate {leaf.subject.rfc4514_string()}",
        key_id=keys.fingerprint(key),
    )


def verify_with_sigstore(
    bundle: Mapping[str, Any], identity: str, issuer: str, trusted_root: Path | None = None
) -> Signed:
    """Verify a keyless Sigstore bundle with an identity + OIDC issuer policy."""
    # Imported here: sigstore pulls in a large dependency tree only keyless needs.
    from sigstore import errors as sigstore_errors
    from sigstore.models import Bundle
    from sigstore.verify import Verifier, policy

    try:
        parsed = Bundle.from_json(json.dumps(bundle))
    except (sigstore_errors.Error, ValueError) as error:
        raise SignatureError(f"not a valid Sigstore bundle ({_first_line(error)})") from None
    root = _trusted_root(trusted_root)
    verifier = Verifier(trusted_root=root)
    try:
        payload_type, payload = verifier.verify_dsse(
            parsed, policy.Identity(identity=identity, issuer=issuer)
        )
    except sigstore_errors.VerificationError as error:
        raise SignatureError(f"keyless signature does not verify: {_first_line(error)}") from None
    entry = parsed.log_entry._inner
    return _signed(
        _manifest(payload_type, payload),
        f"{identity} ({issuer})",
        identity=proofs.CertificateIdentity(issuer=issuer, subjects=(identity,)),
        integrated_time=(
            datetime.datetime.fromtimestamp(entry.integrated_time, tz=datetime.UTC)
            if entry.integrated_time
            else None
        ),
        log_index=entry.log_index,
        sct_checked=True,  # sigstore's verifier always checks the embedded SCT
    )


def _trusted_root(path: Path | None) -> Any:
    """A Sigstore trusted root from a trusted-root or client-trust-config file (or the one
    sigstore ships), parsed as image policies parse theirs."""
    where = str(path) if path else "sigstore's public-good trusted root"
    try:
        raw = shipped.trusted_root() if path is None else path.read_bytes()
        root = trust.load_trusted_root(raw, trust_config=True)
    except OSError as error:
        raise InputError(f"{where}: cannot read trusted root ({error.strerror})") from None
    except trust.InvalidTrustRoot as error:
        raise InputError(
            f"{where}: not a Sigstore trusted root ({_first_line(error.cause or error)})"
        ) from None
    return root.sigstore


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _manifest(payload_type: str, payload: bytes) -> oms.Manifest:
    try:
        return oms.statement_from_payload(payload_type, payload)
    except oms.OmsError as error:
        raise SignatureError(f"signed statement is not an OMS model signature: {error}") from None


def _check_media_type(bundle: Mapping[str, Any]) -> None:
    # model_signing's key and certificate verifiers accept exactly the v0.3 bundle.
    media = bundle.get("mediaType")
    if media != oms.BUNDLE_MEDIA_TYPE:
        raise SignatureError(f"bundle media type is {media!r}, expected {oms.BUNDLE_MEDIA_TYPE}")


def _envelope(bundle: Mapping[str, Any]) -> tuple[str, bytes, bytes]:
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, Mapping):
        raise SignatureError("the bundle has no DSSE envelope")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures or not isinstance(signatures[0], Mapping):
        raise SignatureError("the DSSE envelope holds no signature")
    try:
        payload = _b64(envelope["payload"])
        signature = _b64(signatures[0]["sig"])
        payload_type = str(envelope["payloadType"])
    except (KeyError, TypeError, ValueError) as error:
        raise SignatureError(f"the DSSE envelope is malformed ({error})") from None
    return payload_type, payload, signature


def _object(value: object, what: str) -> Mapping[str, Any]:
    """A bundle field that must be a JSON object (absent or null reads as empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SignatureError(f"the bundle's {what} is not an object")
    return value


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise ValueError(f"invalid base64: {error}") from None


def _load_ec_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as error:
        raise InputError(f"public key is not a PEM public key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _SUPPORTED_CURVES:
        raise InputError("public key must be an elliptic-curve key on P-256, P-384 or P-521")
    return key


def _curve_hash(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    size = key.curve.key_size
    if size == 256:
        return hashes.SHA256()
    if size == 384:
        return hashes.SHA384()
    return hashes.SHA512()


def _check_chain(
    leaf: x509.Certificate,
    intermediates: Iterable[x509.Certificate],
    anchors: list[x509.Certificate],
) -> None:
    """Walk leaf -> intermediates -> a trusted self-signed root, at the signing time.

    model_signing checks the chain at the leaf's notBefore (the signing time of a
    short-lived certificate), so expired test chains still verify; so does Muster.
    """
    when = leaf.not_valid_before_utc
    pool = list(intermediates) + list(anchors)
    trusted = {a.fingerprint(hashes.SHA256()) for a in anchors}
    current = leaf
    for _ in range(_MAX_CHAIN):
        _check_time(current, when)
        if current.fingerprint(hashes.SHA256()) in trusted and _self_signed(current):
            return
        issuer = _find_issuer(current, pool)
        if issuer is None:
            raise SignatureError(
                f"certificate {current.subject.rfc4514_string()} does not chain to a trusted root"
            )
        if issuer.fingerprint(hashes.SHA256()) not in trusted:
            _check_ca(issuer)
        current = issuer
    raise SignatureError("certificate chain is too long")


def _find_issuer(
    cert: x509.Certificate, pool: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in pool:
        if candidate.subject != cert.issuer or candidate == cert:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, exceptions.InvalidSignature):
            continue
        return candidate
    return None


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, exceptions.InvalidSignature):
        return False
    return True


def _check_time(cert: x509.Certificate, when: datetime.datetime) -> None:
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise SignatureError(
            f"certificate {cert.subject.rfc4514_string()} was not valid "
            f"at signing time {when:%Y-%m-%d}"
        )


def _check_ca(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise SignatureError(f"certificate {cert.subject.rfc4514_string()} is not a CA")


def _check_code_signing(leaf: x509.Certificate) -> None:
    # Same rule as model_signing: digitalSignature key usage, or codeSigning EKU.
    try:
        if leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return
    except x509.ExtensionNotFound:
        pass
    try:
        if (
            oid.ExtendedKeyUsageOID.CODE_SIGNING
            in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        ):
            return
    except x509.ExtensionNotFound:
        pass
    raise SignatureError("the signing certificate may not be used for signing")
