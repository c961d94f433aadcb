"""Trusted public keys: loading them from PEM or DER and checking signatures the way cosign does.

Keys arrive from policies (inline PEM, Secrets), so loading is strict: exactly one public key,
of a kind Sigstore supports (ECDSA P-256/P-384/P-521, Ed25519, RSA of at least 2048 bits),
and a clear message for anything else. Private keys are refused without being parsed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

__all__ = [
    "HASHES",
    "InvalidKey",
    "InvalidSignature",
    "PublicKey",
    "der",
    "describe",
    "fingerprint",
    "load",
    "pem",
    "same",
    "signature_hashes",
    "verify",
    "verify_digest",
]

PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

MAX_KEY_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384

# Digest names as they appear in Rekor entries and bundles, mapped to their hash classes.
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_CURVES: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "secp256r1": ("P-256", hashes.SHA256),
    "secp384r1": ("P-384", hashes.SHA384),
    "secp521r1": ("P-521", hashes.SHA512),
}

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


class InvalidKey(ValueError):
    """Key material that cannot be used as a trusted public key."""


class InvalidSignature(ValueError):
    """A signature that does not verify with the given key."""


def load(data: bytes | str) -> PublicKey:
    """Load one public key from PEM (``PUBLIC KEY`` or PKCS#1 ``RSA PUBLIC KEY``) or DER."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if not isinstance(raw, bytes | bytearray):
        raise InvalidKey(f"public key must be bytes or text, not {type(data).__name__}")
    raw = bytes(raw)
    if not raw.strip():
        raise InvalidKey("public key is empty")
    if len(raw) > MAX_KEY_BYTES:
        raise InvalidKey(f"public key is larger than {MAX_KEY_BYTES} bytes")
    return _check_supported(_load_pem(raw) if b"-----BEGIN" in raw else _load_der(raw))


def _load_pem(raw: bytes) -> object:
    blocks = _PEM_BLOCK.findall(raw)
    labels = [label.decode() for label, _ in blocks]
    if any("PRIVATE KEY" in label for label in labels):
        # Never parse (and never echo) a private key that was pasted by mistake.
        raise InvalidKey("this is a private key; give only the public key")
    if not blocks:
        raise InvalidKey("PEM public key is malformed (no matching BEGIN/END lines)")
    keys = [label for label in labels if label in ("PUBLIC KEY", "RSA PUBLIC KEY")]
    if not keys:
        found = ", ".join(sorted(set(labels)))
        raise InvalidKey(f"PEM holds {found}, not a PUBLIC KEY")
    if len(blocks) > 1:
        raise InvalidKey(f"PEM holds {len(blocks)} blocks; give exactly one public key")
    match = _PEM_BLOCK.search(raw)
    if match is None:  # findall found it; keep mypy and the reader sure
        raise InvalidKey("PEM public key is malformed")
    try:
        return serialization.load_pem_public_key(match.group(0))
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise InvalidKey(f"PEM {labels[0]} is not a valid key ({_short(error)})") from None


def _load_der(raw: bytes) -> object:
    try:
        return serialization.load_der_public_key(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        # DER PKCS#1 RSAPublicKey has no algorithm identifier; cryptography reads it via PEM.
        return serialization.load_pem_public_key(_armour(raw, "RSA PUBLIC KEY"))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidKey("not a PEM or DER public key") from None


def _armour(raw: bytes, label: str) -> bytes:
    body = base64.encodebytes(raw)
    return f"-----BEGIN {label}-----\n".encode() + body + f"-----END {label}-----\n".encode()


def _short(error: BaseException) -> str:
    # cryptography's messages carry FAQ links and decoder internals; keep the first clause.
    text = str(error).split(". See ")[0].splitlines()[0] if str(error) else ""
    return text[:120] or type(error).__name__


def _check_supported(key: object) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise InvalidKey(f"ECDSA curve {key.curve.name} is not supported (P-256/384/521)")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise InvalidKey(
                f"RSA key of {key.key_size} bits is outside {MIN_RSA_BITS}..{MAX_RSA_BITS}"
            )
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise InvalidKey(
        f"{type(key).__name__.removeprefix('_')} keys are not supported "
        "(ECDSA P-256/P-384/P-521, Ed25519, RSA)"
    )


def der(key: PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``key``."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem(key: PublicKey) -> bytes:
    """The PEM SubjectPublicKeyInfo of ``key``."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(key: PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex; Rekor uses the same value as its log ID."""
    return hashlib.sha256(der(key)).hexdigest()


def same(first: PublicKey, second: PublicKey) -> bool:
    return der(first) == der(second)


def describe(key: PublicKey) -> str:
    """A short human name such as ``ECDSA P-256 key sha256:1a2b3c4d``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        kind = f"ECDSA {_CURVES.get(key.curve.name, (key.curve.name,))[0]}"
    elif isinstance(key, rsa.RSAPublicKey):
        kind = f"RSA-{key.key_size}"
    else:
        kind = "Ed25519"
    return f"{kind} key sha256:{fingerprint(key)[:12]}"


def signature_hashes(key: PublicKey) -> tuple[type[hashes.HashAlgorithm], ...]:
    """The digests a signature by ``key`` may use, first the most likely.

    cosign signs with SHA-256 whatever the curve (its ``--signature-digest-algorithm`` default),
    while Sigstore bundles use the curve's own digest (SHA-384 for P-384): accept both, both
    are collision resistant. RSA is PKCS#1 v1.5 with SHA-256 as cosign's verifier loads it.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        native = _CURVES[key.curve.name][1]
        return (hashes.SHA256,) if native is hashes.SHA256 else (hashes.SHA256, native)
    if isinstance(key, rsa.RSAPublicKey):
        return (hashes.SHA256,)
    return ()


def verify(
    key: PublicKey,
    signature: bytes,
    data: bytes,
    *,
    algorithms: Sequence[type[hashes.HashAlgorithm]] | None = None,
) -> None:
    """Check ``signature`` over ``data``; raise :class:`InvalidSignature` if it does not verify."""
    if not signature:
        raise InvalidSignature("signature is empty")
    if isinstance(key, ed25519.Ed25519PublicKey):
        try:
            key.verify(signature, data)
            return
        except _CryptoInvalidSignature:
            raise InvalidSignature(f"signature does not verify with {describe(key)}") from None
    for algorithm in algorithms or signature_hashes(key):
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, data, ec.ECDSA(algorithm()))
            else:
                key.verify(signature, data, padding.PKCS1v15(), algorithm())
            return
        except _CryptoInvalidSignature:
            continue
    raise InvalidSignature(f"signature does not verify with {describe(key)}")


def verify_digest(key: PublicKey, signature: bytes, digest: bytes, algorithm: str) -> None:
    """Check ``signature`` over a message known only by its ``algorithm`` digest."""
    hash_class = HASHES.get(algorithm)
    if hash_class is None:
        raise InvalidSignature(f"digest algorithm {algorithm!r} is not supported")
    size = hash_class().digest_size
    if len(digest) != size:
        raise InvalidSignature(f"{algorithm} digest must be {size} bytes")
    if not signature:
        raise InvalidSignature("signature is empty")
    if isinstance(key, ed25519.Ed25519PublicKey):
        # Pure Ed25519 signs the message itself: a digest alone cannot be checked.
        raise InvalidSignature("an Ed25519 signature needs the artifact itself, not its digest")
    prehashed = utils.Prehashed(hash_class())
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            key.verify(signature, digest, padding.PKCS1v15(), prehashed)
    except _CryptoInvalidSignature:
        raise InvalidSignature(f"signature does not verify with {describe(key)}") from None
