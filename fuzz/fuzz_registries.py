"""OCI manifests, indexes and referrer lists: the pure parts of ``adapters.registries``.

``registries._descriptors`` (index and referrers responses), ``Manifest.json`` and the content
digest check. Documented error: ``registries.RegistryError`` (``DigestMismatch`` for content).
Content is accepted only under its own digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["muster"]):
    from muster.platform import registries


def seeds() -> Iterator[bytes]:
    yield (
        b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",'
        b' "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",'
        b' "digest": "sha256:' + b"a" * 64 + b'", "size": 7,'
        b' "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
        b' "platform": {"architecture": "amd64", "os": "linux"}}]}'
    )
    yield b'{"schemaVersion": 2, "manifests": []}'


def test_one_input(data: bytes) -> None:
    try:
        descriptors = registries._descriptors(data, "fuzz")
    except registries.RegistryError:
        pass
    else:
        _fuzzing.check(all(isinstance(d, dict) for d in descriptors), "non-object descriptor")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        document = registries.Manifest(digest, "application/json", data).json()
    except (registries.RegistryError, ValueError, RecursionError):
        pass  # ValueError: json.JSONDecodeError and UnicodeDecodeError, handled by callers
    else:
        _fuzzing.check(isinstance(document, dict), "manifest JSON is not an object")
    registries._check_digest(digest, data, "fuzz")  # its own digest must match
    for algorithm in ("sha256", "sha512", "md5", ""):
        wrong = f"{algorithm}:{hashlib.sha256(data + b'x').hexdigest()}"
        try:
            registries._check_digest(wrong, data, "fuzz")
        except registries.DigestMismatch:
            continue
        raise _fuzzing.Inconsistent(f"content accepted under a foreign digest {wrong}")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
