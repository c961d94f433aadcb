"""One interface for every signature format: authorities, trusted roots, proofs and the order
in which the image gate asks the registry."""

from __future__ import annotations

import json

import pytest
from cryptography import x509

from muster.signatures import registered
from muster.signatures.rules import (
    authorities,
    bundles,
    cosign,
    formats,
    keys,
    notation,
    proofs,
    trust,
)
from tests.paths import fixture
from tests.unit.signatures import factories
from tests.unit.signatures.conftest import ALICE_DIGEST, Capture, connaisseur_key

pytestmark = pytest.mark.unit

PGI_ROOT = fixture("sigstore", "cosign", "trusted_root_pgi.json")
NOTATION_CA = fixture("notation", "ca.pem").read_bytes()
OCI_DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
ATTESTATION = "https://cosign.sigstore.dev/attestation/v1"
ANYONE = authorities.Identity(issuer_regexp=".*", subject_regexp=".*")


def test_bundles_are_asked_for_before_legacy_signatures() -> None:
    # The order is the round-trip budget: a cosign v3 image never costs a .sig lookup.
    assert [f.format.name for f in registered.FORMATS] == [
        "sigstore-bundle",
        "notation",
        "cosign-legacy",
    ]


def test_notation_signatures_are_asked_for_only_by_notation_authorities() -> None:
    key = authorities.KeyAuthority(name="k", key=connaisseur_key("bob"))
    stores = (notation.TrustStore("ca", tuple(x509.load_pem_x509_certificates(NOTATION_CA))),)
    notary = authorities.NotationAuthority(
        name="n", policy=notation.TrustPolicy("n", stores, ("*",))
    )
    served = {f.format.name: (f.serves(key), f.serves(notary)) for f in registered.FORMATS}
    assert served == {
        "sigstore-bundle": (True, False),
        "notation": (False, True),
        "cosign-legacy": (True, False),
    }


def test_one_parse_serves_bundles_and_legacy_signatures() -> None:
    root = trust.load_trusted_root(PGI_ROOT.read_bytes())
    assert root.sigstore is not None
    assert root.material is root.material  # derived once
    assert root.material.rekor_keys[0].log_id.startswith("c0d23d6ad406973f")


def test_a_client_trust_config_is_read_for_its_trusted_root_only_when_asked() -> None:
    wrapped = json.dumps({"trustedRoot": json.loads(PGI_ROOT.read_bytes())})
    root = trust.load_trusted_root(wrapped, trust_config=True)
    assert root.material.rekor_keys[0].log_id.startswith("c0d23d6ad406973f")
    with pytest.raises(trust.InvalidTrustRoot, match="trusted root is invalid") as raised:
        trust.load_trusted_root(wrapped)
    assert raised.value.cause is not None


def test_a_root_given_as_pem_cannot_verify_bundles(keyless_trust: trust.TrustMaterial) -> None:
    authority = authorities.KeylessAuthority(
        name="pem",
        identities=(ANYONE,),
        trusted_root=trust.TrustedRoot.from_material(keyless_trust),
    )
    bundle = fixture("sigstore", "cosign", "oci-attestation.sigstore.json").read_bytes()
    with pytest.raises(proofs.Rejected, match=r"bundles need a trusted_root\.json"):
        bundles.verify_image(bundle, digest=OCI_DIGEST, authority=authority)


def test_both_formats_prove_the_same_facts_for_one_key() -> None:
    private = factories.private_key("p256")
    key = keys.load(factories.public_pem(private))
    authority = authorities.KeyAuthority(name="ci", key=key)
    bundle = factories.key_bundle(private, factories.statement())
    body = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": "registry.example/app"},
                "image": {"docker-manifest-digest": factories.IMAGE_DIGEST},
                "type": cosign.SIMPLE_SIGNING_TYPE,
            },
            "optional": None,
        }
    ).encode()
    manifest, blobs = factories.manifest((body, factories.sign(private, body)))
    legacy = cosign.LegacySignature(manifest=json.dumps(manifest).encode(), blobs=blobs)
    found = (
        formats.Found(cosign.FORMAT, (legacy,)),
        formats.Found(bundles.FORMAT, (bundle,)),
    )
    attempts = formats.attempts(found, digest=factories.IMAGE_DIGEST, authority=authority)
    proved = [attempt for attempt in attempts if isinstance(attempt, proofs.Proof)]
    assert [(p.format, p.authority, p.digest, p.key_id, p.identity) for p in proved] == [
        ("cosign-legacy", "ci", factories.IMAGE_DIGEST, keys.fingerprint(key), None),
        ("sigstore-bundle", "ci", factories.IMAGE_DIGEST, keys.fingerprint(key), None),
    ]


def test_rejections_are_labelled_by_format_and_position(alice_capture: Capture) -> None:
    authority = authorities.KeyAuthority(name="bob", key=connaisseur_key("bob"))
    legacy = cosign.LegacySignature(
        manifest=json.dumps(alice_capture.manifest).encode(), blobs=alice_capture.blobs
    )
    found = (
        formats.Found(cosign.FORMAT, (legacy,)),
        formats.Found(bundles.FORMAT, (b"{", b"[]")),
    )
    attempts = formats.attempts(found, digest=ALICE_DIGEST, authority=authority)
    reasons = [str(attempt).split(":")[0] for attempt in attempts]
    assert reasons == ["legacy signature", "bundle 1", "bundle 2"]
    assert all(isinstance(attempt, proofs.Rejected) for attempt in attempts)


def test_a_keyless_bundle_proves_an_identity() -> None:
    root = trust.load_trusted_root(PGI_ROOT.read_bytes())
    authority = authorities.KeylessAuthority(name="pgi", identities=(ANYONE,), trusted_root=root)
    bundle = fixture("sigstore", "cosign", "oci-attestation.sigstore.json").read_bytes()
    proof = bundles.verify_image(
        bundle, digest=OCI_DIGEST, authority=authority, predicate_type=ATTESTATION
    )
    assert proof.identity == proofs.CertificateIdentity(
        issuer="https://github.com/login/oauth", subjects=("cody@soyland.com",)
    )
    assert proof.key_id is None and proof.format == "sigstore-bundle"
