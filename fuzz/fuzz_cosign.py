"""Cosign simple-signing payloads and signature manifests: ``cosign.parse_payload`` and
``cosign.parse_manifest``.

Input layout: ``MANIFEST \\x00 BLOB`` (the blob is served under its own sha256 digest; without a
NUL the whole input is tried as a payload). Documented error: ``proofs.Rejected``. An accepted
payload names a parseable reference and a well-formed digest; a layer without a problem carries
exactly the blob its digest names and a signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["muster"]):
    from muster.kernel import references
    from muster.signatures.rules import cosign, proofs

_DIGEST = "sha256:" + "5" * 64


def _payload(reference: str = "registry.example/app", digest: str = _DIGEST) -> bytes:
    document = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": cosign.SIMPLE_SIGNING_TYPE,
        },
        "optional": {"creator": "cosign"},
    }
    return json.dumps(document).encode()


def _manifest(blob: bytes, **annotations: str) -> bytes:
    layer = {
        "mediaType": cosign.SIMPLE_SIGNING_MEDIA_TYPE,
        "size": len(blob),
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "annotations": {cosign.SIGNATURE_ANNOTATION: "MEUCIQ==", **annotations},
    }
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2},
        "layers": [layer],
    }
    return json.dumps(document).encode()


def seeds() -> Iterator[bytes]:
    yield _payload()
    yield _payload("docker.io/library/nginx:1.27", "sha512:" + "e" * 128)
    blob = _payload()
    yield _manifest(blob) + b"\x00" + blob
    yield _manifest(blob, **{cosign.CERTIFICATE_ANNOTATION: "-----BEGIN CERTIFICATE-----"}) + (
        b"\x00" + blob
    )


def test_one_input(data: bytes) -> None:
    manifest, separator, blob = data.partition(b"\x00")
    if not separator:
        try:
            payload = cosign.parse_payload(data)
        except proofs.Rejected:
            return
        references.parse(payload.docker_reference)  # must not raise: it was accepted
        cosign.check_digest(payload.digest)
        return
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    try:
        layers = cosign.parse_manifest(manifest, {digest: blob})
    except proofs.Rejected:
        return
    document = json.loads(manifest)
    for layer in layers:
        if layer.problem is not None:
            _fuzzing.check(layer.payload == b"", "a layer with a problem carries a payload")
            continue
        declared = document["layers"][layer.index]
        _fuzzing.check(declared["digest"] == digest, "accepted a layer whose blob is absent")
        _fuzzing.check(layer.payload == blob, "accepted payload differs from its blob")
        _fuzzing.check(declared["size"] == len(blob), "accepted a layer with a wrong size")
        _fuzzing.check(bool(layer.signature), "accepted a layer without a signature")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
