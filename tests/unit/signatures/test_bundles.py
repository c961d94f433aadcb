"""Sigstore bundles: cosign's real OCI bundle, key-signed cosign v3 bundles, thresholds."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from muster.signatures.rules import authorities, bundles, keys, proofs, trust
from tests.paths import fixture
from tests.unit.signatures import factories

pytestmark = pytest.mark.unit

OCI_DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
ATTESTATION = "https://cosign.sigstore.dev/attestation/v1"
ANYONE = authorities.Identity(issuer_regexp=".*", subject_regexp=".*")


@pytest.fixture(scope="module")
def pgi_root() -> trust.TrustedRoot:
    return trust.load_trusted_root(
        fixture("sigstore", "cosign", "trusted_root_pgi.json").read_bytes()
    )


@pytest.fixture(scope="module")
def production_root() -> trust.TrustedRoot:
    path = fixture("sigstore", "sigstore-python", "embedded-trust", "prod", "trusted_root.json")
    return trust.load_trusted_root(path.read_bytes())


def oci_bundle() -> bytes:
    return fixture("sigstore", "cosign", "oci-attestation.sigstore.json").read_bytes()


# --- cosign's real OCI bundle ----------------------------------------------------------------


def test_cosign_oci_bundle_verifies_against_its_trusted_root(pgi_root: trust.TrustedRoot) -> None:
    authority = authorities.KeylessAuthority(
        name="pgi", identities=(ANYONE,), trusted_root=pgi_root
    )
    verified = bundles.verify_image(
        oci_bundle(), digest=OCI_DIGEST, authority=authority, predicate_type=ATTESTATION
    )
    assert verified.digest == OCI_DIGEST
    assert verified.authority == "pgi"
    assert verified.signer == "cody@soyland.com (issuer https://github.com/login/oauth)"
    assert verified.log_index == 175508996
    assert verified.sct_checked
    assert verified.integrated_time is not None
    assert verified.integrated_time.isoformat() == "2025-02-28T19:18:11+00:00"


def test_cosign_oci_bundle_with_an_exact_identity(pgi_root: trust.TrustedRoot) -> None:
    exact = authorities.Identity(
        issuer="https://github.com/login/oauth", subject="cody@soyland.com"
    )
    authority = authorities.KeylessAuthority(
        name="cody", identities=(exact,), trusted_root=pgi_root
    )
    assert bundles.verify_image(
        oci_bundle(), digest=OCI_DIGEST, authority=authority, predicate_type=ATTESTATION
    )


@pytest.mark.parametrize(
    ("digest", "identity", "predicate", "message"),
    [
        ("sha256:" + "0" * 64, ANYONE, ATTESTATION, "no subject with digest sha256:0000"),
        (
            OCI_DIGEST,
            authorities.Identity(issuer_regexp=".*", subject_regexp="wrong"),
            ATTESTATION,
            "expected /wrong/",
        ),
        (
            OCI_DIGEST,
            authorities.Identity(issuer="https://accounts.google.com", subject="cody@soyland.com"),
            ATTESTATION,
            "expected cody@soyland.com",
        ),
        (
            OCI_DIGEST,
            ANYONE,
            bundles.COSIGN_SIGN_PREDICATE,
            "predicate type is 'https://cosign.sigstore.dev/attestation/v1'",
        ),
        ("latest", ANYONE, ATTESTATION, "image digest"),
    ],
)
def test_cosign_oci_bundle_must_fail_otherwise(
    pgi_root: trust.TrustedRoot,
    digest: str,
    identity: authorities.Identity,
    predicate: str,
    message: str,
) -> None:
    authority = authorities.KeylessAuthority(
        name="a", identities=(identity,), trusted_root=pgi_root
    )
    with pytest.raises(proofs.Rejected, match=message):
        bundles.verify_image(
            oci_bundle(), digest=digest, authority=authority, predicate_type=predicate
        )


def test_cosign_oci_bundle_fails_against_a_foreign_trusted_root() -> None:
    foreign = trust.load_trusted_root(
        fixture(
            "sigstore",
            "conformance",
            "bundle-verify",
            "rekor2-dsse-happy-path",
            "trusted_root.json",
        ).read_bytes()
    )
    authority = authorities.KeylessAuthority(name="a", identities=(ANYONE,), trusted_root=foreign)
    with pytest.raises(proofs.Rejected):
        bundles.verify_image(
            oci_bundle(), digest=OCI_DIGEST, authority=authority, predicate_type=ATTESTATION
        )


def test_cosign_oci_bundle_cannot_pass_as_key_signed(pgi_root: trust.TrustedRoot) -> None:
    key = keys.load(fixture("sigstore", "cosign", "release-cosign.pub").read_bytes())
    authority = authorities.KeyAuthority(name="k", key=key, trusted_root=pgi_root)
    with pytest.raises(proofs.Rejected, match="certificate-based"):
        bundles.verify_image(
            oci_bundle(), digest=OCI_DIGEST, authority=authority, predicate_type=ATTESTATION
        )


# --- a real production bundle for a file ------------------------------------------------------


def test_github_actions_bundle_by_digest(production_root: trust.TrustedRoot) -> None:
    bundle = fixture(
        "sigstore", "sigstore-python", "assets", "bundle_v3_github.whl.sigstore"
    ).read_bytes()
    digest = base64.b64decode(json.loads(bundle)["messageSignature"]["messageDigest"]["digest"])
    workflow = authorities.Identity(
        issuer="https://token.actions.githubusercontent.com",
        subject_regexp=r"https://github\.com/trailofbits/rfc8785\.py/\.github/workflows/release\.yml@refs/tags/v.*",
    )
    verified = bundles.verify_artifact(
        bundle,
        bundles.Artifact(sha256=digest),
        identities=(workflow,),
        trusted_root=production_root,
    )
    assert verified.signer.startswith("https://github.com/trailofbits/rfc8785.py/")
    with pytest.raises(proofs.Rejected, match=r"message digest mismatch|Signature is invalid"):
        bundles.verify_artifact(
            bundle,
            bundles.Artifact.from_bytes(b"another wheel"),
            identities=(workflow,),
            trusted_root=production_root,
        )


# --- key-signed cosign v3 bundles ------------------------------------------------------------


def key_authority(
    kind: str = "p256", root: trust.TrustedRoot | None = None
) -> authorities.KeyAuthority:
    key = keys.load(factories.public_pem(factories.private_key(kind)))
    return authorities.KeyAuthority(name=kind, key=key, trusted_root=root)


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [("p256", None), ("p384", hashes.SHA384()), ("p384", None), ("ed25519", None), ("rsa", None)],
)
def test_key_signed_image_bundle_without_a_log(
    kind: str, algorithm: hashes.HashAlgorithm | None
) -> None:
    bundle = factories.key_bundle(
        factories.private_key(kind), factories.statement(), algorithm=algorithm
    )
    verified = bundles.verify_image(
        bundle, digest=factories.IMAGE_DIGEST, authority=key_authority(kind)
    )
    assert verified.signer == keys.describe(key_authority(kind).key)
    assert verified.log_index is None  # no transparency log was asked for


@pytest.mark.parametrize(
    ("bundle", "digest", "kind", "message"),
    [
        (
            lambda: factories.key_bundle(factories.private_key("p256"), factories.statement()),
            factories.OTHER_DIGEST,
            "p256",
            "no subject with digest",
        ),
        (
            lambda: factories.key_bundle(
                factories.private_key("p256-other"), factories.statement()
            ),
            factories.IMAGE_DIGEST,
            "p256",
            "DSSE signature does not verify",
        ),
        (
            lambda: factories.key_bundle(
                factories.private_key("p256"), factories.statement(), signed_body=b"{}"
            ),
            factories.IMAGE_DIGEST,
            "p256",
            "DSSE signature does not verify",
        ),
        (
            lambda: factories.key_bundle(
                factories.private_key("p256"),
                factories.statement(predicate_type="https://slsa.dev/provenance/v1"),
            ),
            factories.IMAGE_DIGEST,
            "p256",
            "predicate type",
        ),
        (
            lambda: factories.key_bundle(
                factories.private_key("p256"), factories.statement(), payload_type="text/plain"
            ),
            factories.IMAGE_DIGEST,
            "p256",
            "not an in-toto statement",
        ),
        (
            lambda: factories.key_bundle(factories.private_key("p256"), b"[1]"),
            factories.IMAGE_DIGEST,
            "p256",
            "not a JSON object",
        ),
        (
            lambda: factories.key_bundle(factories.private_key("p256"), b'{"subject": []}'),
            factories.IMAGE_DIGEST,
            "p256",
            "no subject",
        ),
    ],
)
def test_key_signed_image_bundles_that_must_fail(
    bundle: Any, digest: str, kind: str, message: str
) -> None:
    with pytest.raises(proofs.Rejected, match=message):
        bundles.verify_image(bundle(), digest=digest, authority=key_authority(kind))


def test_a_required_log_entry_that_is_missing_fails(pgi_root: trust.TrustedRoot) -> None:
    bundle = factories.key_bundle(factories.private_key("p256"), factories.statement())
    with pytest.raises(proofs.Rejected, match="no transparency log entry"):
        bundles.verify_image(
            bundle, digest=factories.IMAGE_DIGEST, authority=key_authority(root=pgi_root)
        )


def test_key_bundle_cannot_pass_as_keyless(pgi_root: trust.TrustedRoot) -> None:
    bundle = factories.key_bundle(factories.private_key("p256"), factories.statement())
    authority = authorities.KeylessAuthority(name="k", identities=(ANYONE,), trusted_root=pgi_root)
    with pytest.raises(proofs.Rejected, match="bundle is invalid"):
        bundles.verify_image(bundle, digest=factories.IMAGE_DIGEST, authority=authority)


def test_two_dsse_signatures_are_refused() -> None:
    document = json.loads(
        factories.key_bundle(factories.private_key("p256"), factories.statement())
    )
    document["dsseEnvelope"]["signatures"] *= 2
    with pytest.raises(proofs.Rejected, match="exactly one signature"):
        bundles.verify_image(
            json.dumps(document), digest=factories.IMAGE_DIGEST, authority=key_authority()
        )


# --- the conformance key-signed bundle through the API ----------------------------------------

MANAGED = ("sigstore", "conformance", "bundle-verify", "managed-key-and-trusted-root")


def managed() -> tuple[bytes, keys.PublicKey, trust.TrustedRoot, bundles.Artifact]:
    return (
        fixture(*MANAGED, "bundle.sigstore.json").read_bytes(),
        keys.load(fixture(*MANAGED, "key.pub").read_bytes()),
        trust.load_trusted_root(fixture(*MANAGED, "trusted_root.json").read_bytes()),
        bundles.Artifact.from_bytes(fixture("sigstore", "conformance", "a.txt").read_bytes()),
    )


def test_key_bundle_with_a_log_entry_verifies() -> None:
    bundle, key, root, artifact = managed()
    verified = bundles.verify_artifact(bundle, artifact, key=key, trusted_root=root)
    assert verified.log_index == 51753644
    assert verified.integrated_time is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update(logIndex="51753645"), "transparency log entry is invalid"),
        (lambda e: e.update(integratedTime="1767810966"), "transparency log entry is invalid"),
        (lambda e: e["inclusionProof"]["hashes"].reverse(), "transparency log entry is invalid"),
        (lambda e: e.pop("inclusionProof"), "invalid"),
        (lambda e: e["kindVersion"].update(kind="dsse"), "another kind than the bundle says"),
    ],
)
def test_tampered_key_bundle_log_entries_fail(change: Any, message: str) -> None:
    bundle, key, root, artifact = managed()
    document = json.loads(bundle)
    change(document["verificationMaterial"]["tlogEntries"][0])
    with pytest.raises(proofs.Rejected, match=message):
        bundles.verify_artifact(json.dumps(document), artifact, key=key, trusted_root=root)


def test_key_bundle_log_entry_must_record_this_signature() -> None:
    bundle, _key, root, artifact = managed()
    # A log entry re-signed by someone else cannot be made; instead the bundle's own key is
    # swapped: the signature then fails before the log is consulted, and a foreign root fails.
    with pytest.raises(proofs.Rejected, match="does not verify"):
        bundles.verify_artifact(bundle, artifact, key=key_authority().key, trusted_root=root)
    pgi = trust.load_trusted_root(
        fixture("sigstore", "cosign", "trusted_root_pgi.json").read_bytes()
    )
    with pytest.raises(proofs.Rejected, match="transparency log entry is invalid"):
        bundles.verify_artifact(bundle, artifact, key=managed()[1], trusted_root=pgi)


def test_key_bundle_for_another_artifact_fails() -> None:
    bundle, key, root, _artifact = managed()
    with pytest.raises(proofs.Rejected, match="different artifact digest"):
        bundles.verify_artifact(
            bundle, bundles.Artifact.from_bytes(b"b"), key=key, trusted_root=root
        )


def test_verify_artifact_needs_one_way_to_verify(production_root: trust.TrustedRoot) -> None:
    bundle, key, root, artifact = managed()
    with pytest.raises(authorities.InvalidPolicy, match="not both"):
        bundles.verify_artifact(bundle, artifact, key=key, identities=(ANYONE,), trusted_root=root)
    with pytest.raises(authorities.InvalidPolicy, match="give a key"):
        bundles.verify_artifact(bundle, artifact, trusted_root=root)
    with pytest.raises(authorities.InvalidPolicy, match="needs a trusted root"):
        bundles.verify_artifact(bundle, artifact, identities=(ANYONE,))


def test_artifact_digests() -> None:
    artifact = bundles.Artifact.from_digest("sha256:" + "ab" * 32)
    assert artifact.digest == "sha256:" + "ab" * 32 and artifact.data is None
    for bad in ("sha512:" + "ab" * 64, "sha256:xyz", "sha256:" + "zz" * 32):
        with pytest.raises(ValueError, match="digest"):
            bundles.Artifact.from_digest(bad)


@pytest.mark.parametrize("name", ["trustedroot.badtype.json", "certificate_authority.json"])
def test_bad_trusted_roots_are_refused(name: str) -> None:
    data = fixture("sigstore", "sigstore-python", "assets", "trusted_root", name).read_bytes()
    with pytest.raises(trust.InvalidTrustRoot, match="trusted root is invalid"):
        trust.load_trusted_root(data)


def test_trust_root_without_a_tlog_validity_start_is_refused() -> None:
    data = fixture(
        "sigstore",
        "conformance",
        "bundle-verify",
        "trust-root-tlog-missing-validity-start_fail",
        "trusted_root.json",
    ).read_bytes()
    with pytest.raises(trust.InvalidTrustRoot, match="start"):
        trust.load_trusted_root(data)


# --- thresholds ------------------------------------------------------------------------------


def _verified(name: str) -> proofs.Proof:
    return proofs.Proof(digest=factories.IMAGE_DIGEST, signer=name, authority=name)


def test_two_of_three() -> None:
    outcomes = [
        authorities.outcome("alice", [_verified("alice")]),
        authorities.outcome("bob", [proofs.Rejected("bad"), _verified("bob")]),
        authorities.outcome("carol", [proofs.Rejected("signature does not verify")]),
    ]
    result = authorities.threshold(outcomes, 2)
    assert result.passed
    assert result.satisfied == ("alice", "bob")
    assert result.message == "signed by 2 of 2 required authorities"
    result = authorities.threshold(outcomes, 3)
    assert not result.passed
    assert result.message == (
        "signed by 2 of 3 required authorities (carol: signature does not verify)"
    )


def test_no_attempts_means_no_signature() -> None:
    result = authorities.threshold([authorities.outcome("alice", [])], 1)
    assert not result.passed
    assert "alice: no signature found" in result.message


@pytest.mark.parametrize("required", [0, 4, -1])
def test_threshold_must_be_reachable(required: int) -> None:
    outcomes = [authorities.outcome(name, []) for name in ("a", "b", "c")]
    with pytest.raises(authorities.InvalidPolicy, match="threshold"):
        authorities.threshold(outcomes, required)


def test_an_authority_counts_once() -> None:
    outcomes = [
        authorities.outcome("a", [_verified("a")]),
        authorities.outcome("a", [_verified("a")]),
    ]
    with pytest.raises(authorities.InvalidPolicy, match="exactly once"):
        authorities.threshold(outcomes, 2)
