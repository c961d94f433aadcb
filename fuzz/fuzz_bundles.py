"""Sigstore bundles: ``bundles.verify_artifact`` and ``bundles.verify_image``.

Documented error: ``proofs.Rejected``. A bundle built from fuzzed bytes
is never signed by the harness's freshly generated key, nor by a Fulcio certificate for the
expected identity, so every input must be rejected: any ``Proof`` is a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import _fuzzing
import atheris  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

with atheris.instrument_imports(include=["muster", "sigstore", "sigstore_models"]):
    from muster.signatures.rules import authorities, bundles, keys, proofs, trust

_DATA = Path(__file__).resolve().parent / "data"
_KEY = keys.load(
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
)
_ROOT = trust.load_trusted_root((_DATA / "trusted_root.json").read_bytes())
_ARTIFACT = bundles.Artifact.from_bytes(b"fuzz\n")
_IDENTITY = authorities.Identity(issuer="https://issuer.example", subject="fuzz@example.com")
_DIGEST = "sha256:" + "1" * 64


def seeds() -> Iterator[bytes]:
    yield b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'
    yield (
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
        b' "verificationMaterial": {"publicKey": {"hint": "x"}},'
        b' "dsseEnvelope": {"payload": "e30=", "payloadType": "application/vnd.in-toto+json",'
        b' "signatures": [{"sig": "MEUCIQ=="}]}}'
    )


def test_one_input(data: bytes) -> None:
    attempts: tuple[Callable[[], proofs.Proof], ...] = (
        lambda: bundles.verify_artifact(data, _ARTIFACT, key=_KEY),
        lambda: bundles.verify_artifact(
            data, _ARTIFACT, identities=(_IDENTITY,), trusted_root=_ROOT
        ),
        lambda: bundles.verify_image(
            data, digest=_DIGEST, authority=authorities.KeyAuthority(name="k", key=_KEY)
        ),
    )
    for attempt in attempts:
        try:
            verified = attempt()
        except proofs.Rejected as error:
            _fuzzing.check(bool(str(error)), "Rejected without a message")
            continue
        raise _fuzzing.Inconsistent(f"random bytes verified: {verified!r}")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
