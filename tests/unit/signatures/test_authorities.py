"""Reading a keyless signing certificate's identity fails closed on hostile certificates."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from muster.signatures.rules import authorities, proofs

pytestmark = pytest.mark.unit

FIRST = x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")
SECOND = x509.ObjectIdentifier("1.3.6.1.4.1.99999.2")


def _certificate(*extensions: x509.ObjectIdentifier) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(minutes=10))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("dev@example.com")]), critical=False
        )
    )
    for oid in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x0c\x01x"), False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_a_well_formed_certificate_names_its_subject() -> None:
    certificate = x509.load_der_x509_certificate(_certificate(FIRST, SECOND))
    assert authorities.certificate_identity(certificate).subjects == ("dev@example.com",)


def test_a_repeated_extension_is_a_rejection_not_a_crash() -> None:
    # The same OID twice (the DER of the second OID rewritten into the first's): the
    # signature no longer matches, but the identity is read before any chain check.
    der = _certificate(FIRST, SECOND)
    # 1.3.6.1.4.1.99999.{1,2}: equal-length encodings, so the rewrite stays valid DER.
    second_der = b"\x06\x09\x2b\x06\x01\x04\x01\x86\x8d\x1f\x02"
    first_der = b"\x06\x09\x2b\x06\x01\x04\x01\x86\x8d\x1f\x01"
    assert der.count(second_der) == 1
    certificate = x509.load_der_x509_certificate(der.replace(second_der, first_der))
    with pytest.raises(proofs.Rejected, match="malformed extensions"):
        authorities.certificate_identity(certificate)
