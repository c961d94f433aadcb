"""A test certificate authority for Notation signatures, and the Notary Project signer.

Certificates follow the Notary Project's certificate requirements (a CA with keyCertSign, a
signing certificate with digitalSignature and the codeSigning purpose); the signatures are
made by ``notationsign`` (``tools/notationsign``), which signs with the Notary Project's own Go
libraries. ``python -m tests.notary FOLDER`` rewrites the committed envelopes of
``tests/fixtures/notation/``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests import peers

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Fixed so that the committed fixtures do not depend on when they were made.
NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2046, 1, 1, tzinfo=datetime.UTC)
SIGNER_SUBJECT = "C=US,ST=WA,L=Seattle,O=Muster Tests,OU=Release,CN=image-signer"


def name(rfc4514: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(rfc4514)


@dataclasses.dataclass(frozen=True)
class Issued:
    """A key and its certificate chain, signing certificate first, root last."""

    key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """The key and the chain as PEM files, for ``notationsign``."""
        folder.mkdir(parents=True, exist_ok=True)
        key = folder / f"{stem}.key"
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        chain = folder / f"{stem}.chain.pem"
        chain.write_bytes(b"".join(pem(c) for c in self.chain))
        return key, chain


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    size = key.key_size if isinstance(key, rsa.RSAPrivateKey) else key.curve.key_size
    if size in (256, 2048):
        return hashes.SHA256()
    if size in (384, 3072):
        return hashes.SHA384()
    return hashes.SHA512()


def ca(
    subject: str = "C=US,ST=WA,O=Muster Tests,CN=Muster Test Notary Root",
    *,
    parent: Issued | None = None,
    key: PrivateKey | None = None,
) -> Issued:
    """A root CA (self-signed) or, with ``parent``, an intermediate CA under it."""
    key = key or ec.generate_private_key(ec.SECP384R1())
    issuer_key = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(parent.certificate.subject if parent else name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    certificate = builder.sign(issuer_key, _hash_for(issuer_key))
    return Issued(key=key, chain=(certificate, *(parent.chain if parent else ())))


def signer(
    issuer: Issued,
    subject: str = SIGNER_SUBJECT,
    *,
    key: PrivateKey | None = None,
    not_before: datetime.datetime = NOT_BEFORE,
    not_after: datetime.datetime = NOT_AFTER,
    crl: str | None = None,
) -> Issued:
    """A signing certificate issued by ``issuer``, valid from ``not_before`` to ``not_after``
    (with ``crl``, naming that CRL distribution point)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    )
    if crl is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    certificate = builder.sign(issuer.key, _hash_for(issuer.key))
    return Issued(key=key, chain=(certificate, *issuer.chain))


def tsa(
    root: Issued,
    subject: str = "C=US,ST=WA,O=Muster Tests,CN=Muster Test TSA",
    *,
    not_before: datetime.datetime = NOT_BEFORE,
    not_after: datetime.datetime = NOT_AFTER,
) -> Issued:
    """A timestamping certificate under ``root``: critical timeStamping as its only purpose,
    as RFC 3161 and the Notary Project require."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(root.key, _hash_for(root.key))
    )
    return Issued(key=key, chain=(certificate, *root.chain))


def sign(
    issued: Issued,
    workdir: Path,
    *,
    envelope: str = "jws",
    reference: str | None = None,
    descriptor: dict[str, object] | None = None,
    signing_time: datetime.datetime | None = None,
    expiry: str | None = None,
    out: Path | None = None,
    timestamper: Issued | None = None,
    timestamp_time: datetime.datetime | None = None,
) -> str:
    """Sign with the Notary Project's libraries: push a referrer of ``reference`` (and return
    the signature manifest's digest), or sign ``descriptor`` into ``out`` only. With
    ``timestamper`` (see :func:`tsa`), the signature carries its RFC 3161 timestamp, of
    ``timestamp_time`` (default: the signing time)."""
    stem = f"signer-{issued.certificate.serial_number:x}"
    key, chain = issued.write(workdir, stem)
    command = [str(peers.tool("notationsign")), f"-key={key}", f"-chain={chain}"]
    command.append(f"-envelope={envelope}")
    if reference is not None:
        command.append(f"-reference={reference}")
    if descriptor is not None:
        target = workdir / f"{stem}.descriptor.json"
        target.write_text(json.dumps(descriptor))
        command.append(f"-descriptor={target}")
    if signing_time is not None:
        command.append(f"-signing-time={signing_time.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    if expiry is not None:
        command.append(f"-expiry={expiry}")
    if out is not None:
        command.append(f"-out={out}")
    if timestamper is not None:
        tsa_key, tsa_chain = timestamper.write(
            workdir, f"tsa-{timestamper.certificate.serial_number:x}"
        )
        command += [f"-tsa-key={tsa_key}", f"-tsa-chain={tsa_chain}"]
    if timestamp_time is not None:
        command.append(f"-timestamp-time={timestamp_time.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"notationsign failed: {done.stderr.strip()}")
    return done.stdout.strip()


def push_envelope(reference: str, envelope: Path, *, format: str = "jws") -> str:
    """Push an envelope file as it is (a tampered one) as a Notation signature of
    ``reference``, the way notation pushes; the signature manifest's digest."""
    done = subprocess.run(
        [
            str(peers.tool("notationsign")),
            f"-envelope={format}",
            f"-reference={reference}",
            f"-push-envelope={envelope}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"notationsign failed: {done.stderr.strip()}")
    return done.stdout.strip()


# ---------------------------------------------------------------------------------------------
# The committed fixtures

# The manifest the fixture envelopes sign: go-containerregistry's empty image (its digest is
# what `crane` prints for empty.Image); the bytes themselves are never fetched.
FIXTURE_TARGET: dict[str, object] = {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4",
    "size": 403,
}


def make_fixtures(folder: Path) -> None:
    """Write a CA, an unrelated CA and envelopes signed in every way the tests need."""
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / ".work"
    root = ca()
    intermediate = ca("C=US,ST=WA,O=Muster Tests,CN=Muster Test Notary Issuing CA", parent=root)
    other = ca("C=US,ST=WA,O=Somebody Else,CN=Untrusted Root")
    (folder / "ca.pem").write_bytes(pem(root.certificate))
    (folder / "other-ca.pem").write_bytes(pem(other.certificate))
    ec_signer = signer(root)
    rsa_signer = signer(intermediate, key=rsa.generate_private_key(65537, 3072))
    expired = signer(
        root,
        not_before=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC),
    )
    stranger = signer(other, "C=US,ST=WA,O=Somebody Else,CN=image-signer")
    during = datetime.datetime(2026, 1, 15, tzinfo=datetime.UTC)
    cases: list[tuple[str, Issued, str, dict[str, object]]] = [
        ("jws-ec.sig", ec_signer, "jws", {}),
        ("cose-ec.sig", ec_signer, "cose", {}),
        ("jws-rsa-intermediate.sig", rsa_signer, "jws", {}),
        ("cose-rsa-intermediate.sig", rsa_signer, "cose", {}),
        ("jws-expired-certificate.sig", expired, "jws", {"signing_time": during}),
        ("cose-expired-certificate.sig", expired, "cose", {"signing_time": during}),
        ("jws-untrusted-ca.sig", stranger, "jws", {}),
        ("cose-signature-expiry.sig", ec_signer, "cose", {"signing_time": during, "expiry": "1h"}),
        ("jws-signature-expiry.sig", ec_signer, "jws", {"signing_time": during, "expiry": "1h"}),
    ]
    for file, issued, envelope, options in cases:
        sign(
            issued,
            work,
            envelope=envelope,
            descriptor=FIXTURE_TARGET,
            out=folder / file,
            signing_time=options.get("signing_time"),  # type: ignore[arg-type]
            expiry=options.get("expiry"),  # type: ignore[arg-type]
        )
    (folder / "target.json").write_text(json.dumps(FIXTURE_TARGET, indent=2) + "\n")
    for path in work.iterdir():
        path.unlink()
    work.rmdir()


def make_timestamp_fixtures(folder: Path) -> None:
    """Envelopes with RFC 3161 timestamp countersignatures, under a CA and a TSA of their own."""
    work = folder / ".work"
    root = ca("C=US,ST=WA,O=Muster Tests,CN=Muster Test Timestamped Root")
    tsa_root = ca("C=US,ST=WA,O=Muster Tests,CN=Muster Test TSA Root")
    timestamper = tsa(tsa_root)
    (folder / "timestamp-ca.pem").write_bytes(pem(root.certificate))
    (folder / "tsa-ca.pem").write_bytes(pem(tsa_root.certificate))
    january = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    expired = signer(root, not_before=january, not_after=january + datetime.timedelta(days=31))
    during = january + datetime.timedelta(days=14)
    cases: list[tuple[str, Issued, str, dict[str, datetime.datetime]]] = [
        ("jws-timestamped.sig", signer(root), "jws", {}),
        ("cose-timestamped-expired-certificate.sig", expired, "cose", {"signing_time": during}),
        ("jws-timestamped-expired-certificate.sig", expired, "jws", {"signing_time": during}),
    ]
    for file, issued, envelope, options in cases:
        sign(
            issued,
            work,
            envelope=envelope,
            descriptor=FIXTURE_TARGET,
            out=folder / file,
            signing_time=options.get("signing_time"),
            timestamper=timestamper,
        )
    for path in work.iterdir():
        path.unlink()
    work.rmdir()


if __name__ == "__main__":
    if sys.argv[2:] == ["timestamps"]:
        make_timestamp_fixtures(Path(sys.argv[1]))
    else:
        make_fixtures(Path(sys.argv[1]))
        make_timestamp_fixtures(Path(sys.argv[1]))
