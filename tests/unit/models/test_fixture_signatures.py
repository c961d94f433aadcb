"""The real model_signing signatures in the test fixtures verify (or fail) as recorded."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from muster.models import files as modelfiles
from muster.signatures import oms as modelsigs
from muster.signatures.rules import keys, proofs
from tests.unit.models.conftest import copy_fixture, transparency

pytestmark = pytest.mark.unit

VERSIONS = ("v0.3.1", "v1.0.0", "v1.1.0")
IDENTITY = "stefanb@us.ibm.com"
ISSUER = "https://sigstore.verify.ibm.com/oauth2"
# Subject digests recorded in the signatures (signme-1 + signme-2, or signme-1 alone).
TWO_FILES = "sha256:61d4849d9d90076d6215f4d525f13d6574af8e3f67aef3e6f36fc40a14fdd226"


def key_pem() -> bytes:
    return transparency("keys", "certificate", "signing-key-pub.pem").read_bytes()


def ca_pem() -> bytes:
    return transparency("keys", "certificate", "ca-cert.pem").read_bytes()


def model_path(folder: Path, version: str, method: str) -> Path:
    # v0.3.1 and v1.0.0 key signatures cover the single file signme-1 (upstream scripts).
    if method == "elliptic-key" and version in ("v0.3.1", "v1.0.0"):
        return folder / "signme-1"
    return folder


def key_check(pem: bytes) -> modelsigs.Check:
    return lambda bundle: modelsigs.verify_with_key(bundle, pem)


def cert_check(pem: bytes) -> modelsigs.Check:
    return lambda bundle: modelsigs.verify_with_certificates(bundle, pem)


def keyless_check(identity: str = IDENTITY, root: Path | None = None) -> modelsigs.Check:
    return lambda bundle: modelsigs.verify_with_sigstore(bundle, identity, ISSUER, root)


def check_for(method: str) -> modelsigs.Check:
    if method == "elliptic-key":
        return key_check(key_pem())
    if method == "certificate":
        return cert_check(ca_pem())
    return keyless_check()


@pytest.mark.parametrize("method", ["elliptic-key", "certificate", "sigstore"])
@pytest.mark.parametrize("version", VERSIONS)
def test_fixture_signature_verifies(version: str, method: str) -> None:
    folder = transparency(f"{version}-{method}")
    outcome = modelfiles.verify_signature(
        model_path(folder, version, method), folder / "model.sig", check_for(method)
    )
    assert outcome.differences == ()
    assert outcome.passes
    if method != "elliptic-key":
        assert outcome.measured.digest == TWO_FILES == outcome.expected_digest
    names = [r.name for r in outcome.measured.resources]
    assert "model.sig" not in names and "ignore-me" not in names


@pytest.mark.parametrize("method", ["elliptic-key", "certificate", "sigstore"])
@pytest.mark.parametrize("version", VERSIONS)
def test_tampered_fixture_fails_naming_the_file(version: str, method: str, tmp_path: Path) -> None:
    folder = copy_fixture(f"{version}-{method}", tmp_path)
    target = folder / "signme-1"
    data = bytearray(target.read_bytes())
    data[0] ^= 0x01
    target.write_bytes(bytes(data))
    outcome = modelfiles.verify_signature(
        model_path(folder, version, method), folder / "model.sig", check_for(method)
    )
    assert not outcome.passes
    assert [d.kind for d in outcome.differences] == ["changed"]
    assert outcome.differences[0].name in ("signme-1", ".")


@pytest.mark.parametrize("version", VERSIONS)
def test_key_signature_fails_with_another_key(version: str) -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bundle = modelsigs.read_bundle(transparency(f"{version}-elliptic-key", "model.sig"))
    with pytest.raises(modelsigs.SignatureError, match=r"different key|does not verify"):
        modelsigs.verify_with_key(bundle, pem)


@pytest.mark.parametrize("version", VERSIONS)
def test_key_signature_fails_against_the_ca(version: str) -> None:
    bundle = modelsigs.read_bundle(transparency(f"{version}-elliptic-key", "model.sig"))
    with pytest.raises(modelsigs.SignatureError, match="no certificate chain"):
        modelsigs.verify_with_certificates(bundle, ca_pem())


def test_key_signature_with_the_signers_certificate_key_hint_mismatch_is_named() -> None:
    # The public key of a P-256 key is not the signer's: the hint names the mismatch.
    bundle = modelsigs.read_bundle(transparency("v1.1.0-elliptic-key", "model.sig"))
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(modelsigs.SignatureError, match="different key"):
        modelsigs.verify_with_key(bundle, pem)


def _self_signed_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "root-ca")])
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=3650))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("version", VERSIONS)
def test_certificate_signature_fails_against_a_wrong_root(version: str) -> None:
    bundle = modelsigs.read_bundle(transparency(f"{version}-certificate", "model.sig"))
    with pytest.raises(modelsigs.SignatureError, match="does not chain to a trusted root"):
        modelsigs.verify_with_certificates(bundle, _self_signed_ca())


def test_certificate_signature_fails_trusting_only_the_intermediate() -> None:
    bundle = modelsigs.read_bundle(transparency("v1.1.0-certificate", "model.sig"))
    intermediate = transparency("keys", "certificate", "int-ca-cert.pem").read_bytes()
    with pytest.raises(modelsigs.SignatureError, match="does not chain"):
        modelsigs.verify_with_certificates(bundle, intermediate)


@pytest.mark.parametrize("version", VERSIONS)
def test_keyless_signature_fails_for_another_identity(version: str) -> None:
    bundle = modelsigs.read_bundle(transparency(f"{version}-sigstore", "model.sig"))
    with pytest.raises(modelsigs.SignatureError, match="SANs do not match"):
        modelsigs.verify_with_sigstore(bundle, "someone@example.com", ISSUER)
    with pytest.raises(modelsigs.SignatureError):
        modelsigs.verify_with_sigstore(bundle, IDENTITY, "https://accounts.google.com")


def test_keyless_signature_fails_against_the_staging_root() -> None:
    staging = importlib.resources.files("sigstore._store") / (
        "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"
    )
    root = Path(str(staging / "trusted_root.json"))
    bundle = modelsigs.read_bundle(transparency("v1.1.0-sigstore", "model.sig"))
    with pytest.raises(modelsigs.SignatureError):
        modelsigs.verify_with_sigstore(bundle, IDENTITY, ISSUER, root)


def test_keyless_signature_verifies_with_an_explicit_production_root() -> None:
    production = importlib.resources.files("sigstore._store") / (
        "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    )
    root = Path(str(production / "trusted_root.json"))
    bundle = modelsigs.read_bundle(transparency("v1.0.0-sigstore", "model.sig"))
    signed = modelsigs.verify_with_sigstore(bundle, IDENTITY, ISSUER, root)
    assert signed.manifest.digest == TWO_FILES
    assert IDENTITY in signed.signer


def test_client_trust_config_is_accepted_as_trusted_root() -> None:
    # model_signing's test trust config carries the public-good Fulcio and Rekor keys.
    bundle = modelsigs.read_bundle(transparency("v1.1.0-sigstore", "model.sig"))
    signed = modelsigs.verify_with_sigstore(
        bundle, IDENTITY, ISSUER, transparency("custom_trust_config.json")
    )
    assert signed.manifest.digest == TWO_FILES


def test_trusted_root_that_is_not_one_is_an_input_error(tmp_path: Path) -> None:
    bogus = tmp_path / "root.json"
    bogus.write_text('{"mediaType": "nonsense", "tlogs": 3}')
    bundle = modelsigs.read_bundle(transparency("v1.1.0-sigstore", "model.sig"))
    with pytest.raises(modelsigs.InputError, match="not a Sigstore trusted root") as raised:
        modelsigs.verify_with_sigstore(bundle, IDENTITY, ISSUER, bogus)
    assert "\n" not in str(raised.value)


def test_extra_file_beside_an_old_signature_is_reported(tmp_path: Path) -> None:
    folder = copy_fixture("v1.0.0-certificate", tmp_path)
    (folder / "notes.txt").write_text("not signed\n")
    (folder / "signme-2").unlink()
    outcome = modelfiles.verify_signature(folder, folder / "model.sig", cert_check(ca_pem()))
    assert [(d.kind, d.name) for d in outcome.differences] == [
        ("extra", "notes.txt"),
        ("missing", "signme-2"),
    ]


def test_v1_1_signature_honours_its_signed_ignore_paths(tmp_path: Path) -> None:
    folder = copy_fixture("v1.1.0-elliptic-key", tmp_path)
    (folder / "ignore-me").write_text("changed, but the signature ignores it\n")
    outcome = modelfiles.verify_signature(folder, folder / "model.sig", key_check(key_pem()))
    assert outcome.passes


def test_unreadable_signature_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.sig"
    bad.write_text("not json")
    with pytest.raises(modelsigs.InputError, match="not JSON"):
        modelsigs.read_bundle(bad)
    with pytest.raises(modelsigs.InputError, match="cannot read"):
        modelsigs.read_bundle(tmp_path / "absent.sig")


@pytest.mark.parametrize("method", ["elliptic-key", "certificate", "sigstore"])
def test_each_model_signature_says_what_it_proved(method: str) -> None:
    # The same Proof an image signature gives: the digest, and the key or the identity.
    bundle = modelsigs.read_bundle(transparency(f"v1.1.0-{method}", "model.sig"))
    signed = check_for(method)(bundle)
    proof = signed.proof
    assert (proof.format, proof.digest) == ("oms-bundle", signed.manifest.digest)
    assert proof.signer == signed.signer
    if method == "sigstore":
        assert proof.digest == TWO_FILES
        assert proof.identity == proofs.CertificateIdentity(issuer=ISSUER, subjects=(IDENTITY,))
        assert proof.log_index is not None and proof.integrated_time is not None
        assert proof.key_id is None
    else:
        public = serialization.load_pem_public_key(key_pem())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert proof.key_id == keys.fingerprint(public)
        assert proof.identity is None and proof.log_index is None
