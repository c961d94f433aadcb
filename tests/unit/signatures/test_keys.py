"""Loading trusted public keys and checking signatures with them."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, x25519

from muster.signatures.rules import keys
from tests.paths import fixture
from tests.unit.signatures import factories

pytestmark = pytest.mark.unit


def pubkey(name: str) -> bytes:
    return fixture("sigstore", "cosign", "pubkeys", name).read_bytes()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("google.pem", "RSA-4096"),
        ("rsa-pkcs1.pem", "RSA-4096"),
        ("letsencrypt-testflume-2021.der", "ECDSA P-256"),
    ],
)
def test_cosign_key_loader_inputs(name: str, kind: str) -> None:
    key = keys.load(pubkey(name))
    assert keys.describe(key).startswith(kind + " key sha256:")


def test_der_key_fingerprint_is_the_sha256_of_its_spki() -> None:
    raw = pubkey("letsencrypt-testflume-2021.der")
    assert keys.fingerprint(keys.load(raw)) == hashlib.sha256(raw).hexdigest()


def test_pkcs1_and_spki_forms_of_one_key_are_the_same_key() -> None:
    key = keys.load(pubkey("rsa-pkcs1.pem"))
    assert isinstance(key, type(key))
    spki = keys.pem(key)
    pkcs1_der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert keys.same(keys.load(spki), key)
    assert keys.same(keys.load(pkcs1_der), key)


def test_garbage_must_fail() -> None:
    with pytest.raises(keys.InvalidKey, match="not a PEM or DER public key"):
        keys.load(pubkey("garbage-there-are-limits.txt"))


def test_cosign_release_key_and_text_input() -> None:
    text = fixture("sigstore", "cosign", "release-cosign.pub").read_text()
    assert keys.describe(keys.load(text)).startswith("ECDSA P-256")


@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "ed25519", "rsa"])
def test_generated_keys_of_each_supported_kind_load(kind: str) -> None:
    private = factories.private_key(kind)
    key = keys.load(factories.public_pem(private))
    assert keys.der(key) == private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_private_keys_are_refused_without_echoing_them() -> None:
    private = factories.private_key("p256")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(keys.InvalidKey, match="private key") as caught:
        keys.load(pem)
    body = pem.decode().splitlines()[1]
    assert body not in str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a PUBLIC KEY"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n", "malformed"),
        (b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n", "not a valid key"),
        (b"x" * (keys.MAX_KEY_BYTES + 1), "larger than"),
    ],
)
def test_malformed_inputs_say_why(data: bytes, message: str) -> None:
    with pytest.raises(keys.InvalidKey, match=message):
        keys.load(data)


def test_two_keys_in_one_value_are_refused() -> None:
    both = factories.public_pem(factories.private_key("p256")) + factories.public_pem(
        factories.private_key("p384")
    )
    with pytest.raises(keys.InvalidKey, match="exactly one public key"):
        keys.load(both)


@pytest.mark.parametrize(
    "public",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()).public_key(), id="secp256k1"),
        pytest.param(lambda: x25519.X25519PrivateKey.generate().public_key(), id="x25519"),
        pytest.param(
            # A small DSA key is quick to make; any DSA key is refused.
            lambda: dsa.generate_private_key(key_size=1024).public_key(),  # noqa: S505
            id="dsa",
        ),
    ],
)
def test_unsupported_key_kinds_are_refused(public: object) -> None:
    key = public()  # type: ignore[operator]
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(keys.InvalidKey, match="not supported"):
        keys.load(pem)


def test_short_rsa_keys_are_refused() -> None:
    # A 1024-bit RSA key assembled from fixed numbers (generation would be slow).
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.RSAPublicNumbers(65537, (1 << 1023) + 1155).public_key()
    pem = weak.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(keys.InvalidKey, match="1024 bits"):
        keys.load(pem)


@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "ed25519", "rsa"])
def test_verify_accepts_good_and_refuses_bad_signatures(kind: str) -> None:
    private = factories.private_key(kind)
    key = keys.load(factories.public_pem(private))
    signature = factories.sign(private, b"payload")
    keys.verify(key, signature, b"payload")
    with pytest.raises(keys.InvalidSignature, match="does not verify"):
        keys.verify(key, signature, b"payload!")
    other = keys.load(factories.public_pem(factories.private_key("p256-other")))
    with pytest.raises(keys.InvalidSignature):
        keys.verify(other, signature, b"payload")
    with pytest.raises(keys.InvalidSignature, match="empty"):
        keys.verify(key, b"", b"payload")


@pytest.mark.parametrize(
    ("kind", "algorithm"), [("p384", hashes.SHA384()), ("p521", hashes.SHA512())]
)
def test_ecdsa_accepts_cosigns_sha256_and_the_curves_own_digest(
    kind: str, algorithm: hashes.HashAlgorithm
) -> None:
    private = factories.private_key(kind)
    key = keys.load(factories.public_pem(private))
    keys.verify(key, factories.sign(private, b"data", hashes.SHA256()), b"data")
    keys.verify(key, factories.sign(private, b"data", algorithm), b"data")
    with pytest.raises(keys.InvalidSignature):
        sha1 = hashes.SHA1()  # noqa: S303 (a digest cosign never uses must be refused)
        keys.verify(key, factories.sign(private, b"data", sha1), b"data")


@pytest.mark.parametrize("kind", ["p256", "rsa"])
def test_verify_digest(kind: str) -> None:
    private = factories.private_key(kind)
    key = keys.load(factories.public_pem(private))
    signature = factories.sign(private, b"artifact")
    keys.verify_digest(key, signature, hashlib.sha256(b"artifact").digest(), "sha256")
    with pytest.raises(keys.InvalidSignature):
        keys.verify_digest(key, signature, hashlib.sha256(b"other").digest(), "sha256")
    with pytest.raises(keys.InvalidSignature, match="32 bytes"):
        keys.verify_digest(key, signature, b"short", "sha256")
    with pytest.raises(keys.InvalidSignature, match="not supported"):
        keys.verify_digest(key, signature, b"x" * 16, "md5")


def test_ed25519_cannot_be_checked_against_a_digest() -> None:
    private = factories.private_key("ed25519")
    key = keys.load(factories.public_pem(private))
    digest = hashlib.sha256(b"artifact").digest()
    with pytest.raises(keys.InvalidSignature, match="needs the artifact"):
        keys.verify_digest(key, factories.sign(private, b"artifact"), digest, "sha256")
