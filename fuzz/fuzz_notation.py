"""Notation envelopes: ``notation.parse`` and ``notation.verify`` (JWS and COSE).

Documented error: ``proofs.Rejected``. The trust store is a CA generated here, which signed
nothing: a strict verification that passes is a crash, and so is any verification that names
a trust store. The seeds are real envelopes (``corpus/notation/``): validly signed by another
CA, so an audit-level verification of one may pass, with its authenticity failure logged.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

with atheris.instrument_imports(include=["muster"]):
    from muster.signatures.rules import notation, proofs


def _ca() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("C=US,ST=WA,O=Fuzz,CN=Fuzz Root")
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


_STORE = (notation.TrustStore("fuzz", (_ca(),)),)
_POLICIES = tuple(
    notation.TrustPolicy("fuzz", _STORE, identities, level=level, tsa_stores=tsa)
    for level in (notation.Level.STRICT, notation.Level.AUDIT)
    for identities in (("*",), ("x509.subject: C=US, ST=WA, O=Muster Tests",))
    for tsa in ((), _STORE)  # with a TSA trust store, timestamp tokens are parsed and verified
)
_DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
_NOW = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)


def seeds() -> Iterator[bytes]:
    yield b'{"payload":"e30","protected":"e30","header":{"x5c":[]},"signature":""}'
    yield bytes.fromhex("d28440a0f640")  # tag 18, [h'', {}, null, h'']


def test_one_input(data: bytes) -> None:
    for media_type in (notation.JWS_MEDIA_TYPE, notation.COSE_MEDIA_TYPE):
        envelope = notation.Envelope(media_type, data)
        try:
            notation.parse(envelope)
        except proofs.Rejected as error:
            _fuzzing.check(bool(str(error)), "Rejected without a message")
            continue
        for policy in _POLICIES:
            try:
                verified = notation.verify(envelope, digest=_DIGEST, policy=policy, now=_NOW)
            except proofs.Rejected as error:
                _fuzzing.check(bool(str(error)), "Rejected without a message")
                continue
            _fuzzing.check(policy.level is notation.Level.AUDIT, f"strict passed: {verified!r}")
            _fuzzing.check(verified.trust_store is None, f"trusted by a fresh CA: {verified!r}")
            _fuzzing.check(bool(verified.logged), f"audit passed and logged nothing: {verified!r}")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
