"""Signatures made on the spot with throwaway keys, for cases no real capture covers."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from muster.signatures.rules import bundles, cosign

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

IMAGE_DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


@functools.cache
def private_key(kind: str) -> PrivateKey:
    """One key per kind for the whole session (RSA generation is slow)."""
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "p256-other":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(kind)


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(key: PrivateKey, data: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(algorithm or hashes.SHA256()))
    return key.sign(data, padding.PKCS1v15(), algorithm or hashes.SHA256())


def payload(
    digest: str = IMAGE_DIGEST,
    reference: str = "registry.example/team/app",
    kind: str = cosign.SIMPLE_SIGNING_TYPE,
) -> bytes:
    document = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": kind,
        },
        "optional": None,
    }
    return json.dumps(document).encode()


def layer(body: bytes, signature: bytes, **annotations: str) -> dict[str, Any]:
    return {
        "mediaType": cosign.SIMPLE_SIGNING_MEDIA_TYPE,
        "size": len(body),
        "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
        "annotations": {
            cosign.SIGNATURE_ANNOTATION: base64.b64encode(signature).decode(),
            **annotations,
        },
    }


def manifest(*signed: tuple[bytes, bytes]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A signature manifest over ``(payload, signature)`` pairs, and its blobs."""
    layers = [layer(body, signature) for body, signature in signed]
    blobs = {entry["digest"]: body for entry, (body, _) in zip(layers, signed, strict=True)}
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": 2,
            "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
        },
        "layers": layers,
    }
    return document, blobs


def statement(
    digest: str = IMAGE_DIGEST, predicate_type: str = bundles.COSIGN_SIGN_PREDICATE
) -> bytes:
    algorithm, _, hexdigest = digest.partition(":")
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.example/team/app", "digest": {algorithm: hexdigest}}],
            "predicateType": predicate_type,
            "predicate": {},
        }
    ).encode()


def pae(payload_type: str, body: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(body), body)


def key_bundle(
    key: PrivateKey,
    body: bytes,
    *,
    payload_type: str = bundles.IN_TOTO_PAYLOAD_TYPE,
    signed_body: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A cosign v3 key-signed bundle without a transparency log entry (``--tlog-upload=false``)."""
    signature = sign(key, pae(payload_type, signed_body or body), algorithm)
    document = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "test"}},
        "dsseEnvelope": {
            "payload": base64.b64encode(body).decode(),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return json.dumps(document).encode()
