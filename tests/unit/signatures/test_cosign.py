"""Legacy cosign signatures: Connaisseur's real captures, plus made-up cases around them."""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import json
from typing import Any

import pytest
from cryptography import x509

from muster.signatures.rules import authorities, cosign, keys, proofs, trust
from tests.paths import fixture
from tests.unit.signatures import factories
from tests.unit.signatures.conftest import (
    ALICE_DIGEST,
    KEYLESS_DIGEST,
    Capture,
    connaisseur_key,
)

pytestmark = pytest.mark.unit


def key_authority(name: str, **extra: Any) -> authorities.KeyAuthority:
    return authorities.KeyAuthority(name=name, key=connaisseur_key(name), **extra)


def layer_annotations(capture: Capture) -> dict[str, str]:
    layers: list[dict[str, Any]] = capture.manifest["layers"]  # type: ignore[assignment]
    result: dict[str, str] = layers[0]["annotations"]
    return result


def edited(capture: Capture, **changes: str | None) -> Capture:
    """The capture with layer-0 annotations replaced (``None`` removes one)."""
    manifest = copy.deepcopy(capture.manifest)
    layer_annotations = manifest["layers"][0]["annotations"]  # type: ignore[index]
    for name, value in changes.items():
        real = {
            "certificate": cosign.CERTIFICATE_ANNOTATION,
            "chain": cosign.CHAIN_ANNOTATION,
            "bundle": cosign.BUNDLE_ANNOTATION,
            "signature": cosign.SIGNATURE_ANNOTATION,
        }[name]
        if value is None:
            layer_annotations.pop(real)
        else:
            layer_annotations[real] = value
    return Capture(manifest=manifest, blobs=capture.blobs)


# --- key-based, real capture -----------------------------------------------------------------


def test_alice_signature_verifies_with_alices_key(alice_capture: Capture) -> None:
    verified = cosign.verify(
        alice_capture.manifest,
        alice_capture.blobs,
        digest=ALICE_DIGEST,
        authority=key_authority("alice"),
    )
    assert verified.digest == ALICE_DIGEST
    assert verified.authority == "alice"
    assert verified.docker_reference == "index.docker.io/securesystemsengineering/testimage"
    assert verified.signer == keys.describe(connaisseur_key("alice"))
    assert verified.integrated_time is None  # no Rekor bundle in this capture


@pytest.mark.parametrize("name", ["bob", "charlie", "default"])
def test_alice_signature_fails_with_any_other_key(alice_capture: Capture, name: str) -> None:
    with pytest.raises(proofs.Rejected, match=f"no signature by {name} counts.*does not verify"):
        cosign.verify(
            alice_capture.manifest,
            alice_capture.blobs,
            digest=ALICE_DIGEST,
            authority=key_authority(name),
        )


def test_alice_signature_does_not_cover_another_digest(alice_capture: Capture) -> None:
    with pytest.raises(proofs.Rejected, match=f"payload signs {ALICE_DIGEST}, not the image"):
        cosign.verify(
            alice_capture.manifest,
            alice_capture.blobs,
            digest=KEYLESS_DIGEST,
            authority=key_authority("alice"),
        )


def test_requiring_a_transparency_log_rejects_alices_unlogged_signature(
    alice_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    with pytest.raises(proofs.Rejected, match="no Rekor bundle"):
        cosign.verify(
            alice_capture.manifest,
            alice_capture.blobs,
            digest=ALICE_DIGEST,
            authority=key_authority(
                "alice", trusted_root=trust.TrustedRoot.from_material(keyless_trust)
            ),
        )


def test_manifest_as_bytes_and_a_tampered_blob(alice_capture: Capture) -> None:
    raw = json.dumps(alice_capture.manifest).encode()
    authority = key_authority("alice")
    assert cosign.verify(raw, alice_capture.blobs, digest=ALICE_DIGEST, authority=authority)
    layer_digest = alice_capture.manifest["layers"][0]["digest"]  # type: ignore[index]
    tampered = dict(alice_capture.blobs)
    tampered[layer_digest] = tampered[layer_digest].replace(b"testimage", b"evilimage")
    with pytest.raises(proofs.Rejected, match="does not match its digest"):
        cosign.verify(raw, tampered, digest=ALICE_DIGEST, authority=authority)
    with pytest.raises(proofs.Rejected, match="is missing"):
        cosign.verify(raw, {}, digest=ALICE_DIGEST, authority=authority)


# --- keyless, real capture -------------------------------------------------------------------


def keyless(
    capture: Capture, material: trust.TrustMaterial, *identities: authorities.Identity
) -> proofs.Proof:
    authority = authorities.KeylessAuthority(
        name="keyless",
        identities=identities,
        trusted_root=trust.TrustedRoot.from_material(material),
    )
    return cosign.verify(
        capture.manifest, capture.blobs, digest=KEYLESS_DIGEST, authority=authority
    )


def test_keyless_capture_verifies_for_philipp(
    keyless_capture: Capture,
    keyless_trust: trust.TrustMaterial,
    keyless_roots: dict[str, authorities.Identity],
) -> None:
    verified = keyless(keyless_capture, keyless_trust, keyless_roots["philipp-keyless"])
    assert verified.signer == (
        "philipp.belitz@securesystems.de (issuer https://github.com/login/oauth)"
    )
    assert verified.integrated_time == datetime.datetime(
        2024, 5, 30, 15, 18, 17, tzinfo=datetime.UTC
    )
    assert verified.log_index == 98235800
    assert verified.sct_checked
    assert verified.docker_reference == "index.docker.io/phbelitz/rekor-test"


def test_keyless_capture_fails_for_bob(
    keyless_capture: Capture,
    keyless_trust: trust.TrustMaterial,
    keyless_roots: dict[str, authorities.Identity],
) -> None:
    with pytest.raises(
        proofs.Rejected, match=r"signed by philipp\.belitz.*expected bob@gmail\.com"
    ):
        keyless(keyless_capture, keyless_trust, keyless_roots["bob-keyless"])


def test_any_listed_identity_may_match(
    keyless_capture: Capture,
    keyless_trust: trust.TrustMaterial,
    keyless_roots: dict[str, authorities.Identity],
) -> None:
    assert keyless(
        keyless_capture,
        keyless_trust,
        keyless_roots["bob-keyless"],
        keyless_roots["philipp-keyless"],
    )


@pytest.mark.parametrize(
    "identity",
    [
        authorities.Identity(issuer_regexp="github", subject_regexp="philipp"),  # not anchored
        authorities.Identity(issuer="https://github.com/login/oauth", subject="philipp.belitz"),
        authorities.Identity(
            issuer="https://github.com/login", subject="philipp.belitz@securesystems.de"
        ),
        authorities.Identity(issuer_regexp=".*", subject_regexp="evil-philipp.*"),
    ],
)
def test_identities_match_in_full_only(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial, identity: authorities.Identity
) -> None:
    with pytest.raises(proofs.Rejected, match="expected"):
        keyless(keyless_capture, keyless_trust, identity)


def test_exact_identity_matches(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    exact = authorities.Identity(
        issuer="https://github.com/login/oauth", subject="philipp.belitz@securesystems.de"
    )
    assert keyless(keyless_capture, keyless_trust, exact).authority == "keyless"


PHILIPP = authorities.Identity(issuer_regexp=".*github.*", subject_regexp=".*philipp.*")


def test_untrusted_rekor_key_is_refused(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    material = dataclasses.replace(
        keyless_trust, rekor_keys=(trust.LogKey(connaisseur_key("default")),)
    )
    with pytest.raises(proofs.Rejected, match=r"from log .*, which is not trusted"):
        keyless(keyless_capture, material, PHILIPP)


def test_rekor_key_outside_its_validity_is_refused(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    expired = dataclasses.replace(
        keyless_trust.rekor_keys[0], valid_until=datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)
    )
    material = dataclasses.replace(keyless_trust, rekor_keys=(expired,))
    with pytest.raises(proofs.Rejected, match="Rekor key was not valid"):
        keyless(keyless_capture, material, PHILIPP)


def test_fulcio_ca_outside_its_validity_is_refused(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    authority = dataclasses.replace(
        keyless_trust.authorities[0],
        valid_until=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    )
    material = dataclasses.replace(keyless_trust, authorities=(authority,))
    with pytest.raises(proofs.Rejected, match="no trusted Fulcio CA was valid"):
        keyless(keyless_capture, material, PHILIPP)


def test_wrong_ct_log_key_fails_the_sct(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    material = dataclasses.replace(keyless_trust, ct_keys=(trust.LogKey(connaisseur_key("bob")),))
    with pytest.raises(proofs.Rejected, match="no embedded SCT verifies"):
        keyless(keyless_capture, material, PHILIPP)


def test_without_ct_keys_the_sct_is_not_checked_and_says_so(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    material = dataclasses.replace(keyless_trust, ct_keys=())
    assert keyless(keyless_capture, material, PHILIPP).sct_checked is False


def test_the_same_capture_verifies_with_a_trusted_root_json(keyless_capture: Capture) -> None:
    # cosign's public-good snapshot holds the same Fulcio CA, Rekor key and CT key.
    pgi = trust.load_trusted_root(
        fixture("sigstore", "cosign", "trusted_root_pgi.json").read_bytes()
    ).material
    verified = keyless(keyless_capture, pgi, PHILIPP)
    assert verified.sct_checked and verified.log_index == 98235800


def test_a_certificate_from_an_untrusted_ca_is_refused(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    custom = trust.load_trusted_root(
        fixture(
            "sigstore",
            "conformance",
            "bundle-verify",
            "intoto-with-custom-trust-root",
            "trusted_root.json",
        ).read_bytes()
    ).material
    material = dataclasses.replace(keyless_trust, authorities=custom.authorities)
    with pytest.raises(proofs.Rejected, match="does not chain to a trusted CA"):
        keyless(keyless_capture, material, PHILIPP)


def test_missing_chain_means_no_path_to_the_root(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    with pytest.raises(proofs.Rejected, match="does not chain to a trusted CA"):
        keyless(edited(keyless_capture, chain=None), keyless_trust, PHILIPP)


def test_missing_rekor_bundle_is_refused(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    with pytest.raises(proofs.Rejected, match="no Rekor bundle"):
        keyless(edited(keyless_capture, bundle=None), keyless_trust, PHILIPP)


def test_missing_certificate_is_refused(
    alice_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    authority = authorities.KeylessAuthority(
        name="k", identities=(PHILIPP,), trusted_root=trust.TrustedRoot.from_material(keyless_trust)
    )
    with pytest.raises(proofs.Rejected, match="no signing certificate"):
        cosign.verify(
            alice_capture.manifest, alice_capture.blobs, digest=ALICE_DIGEST, authority=authority
        )


def _rekor_bundle(capture: Capture) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(layer_annotations(capture)[cosign.BUNDLE_ANNOTATION])
    return result


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b["Payload"].update(integratedTime=b["Payload"]["integratedTime"] + 1),
            "SignedEntryTimestamp does not verify",
        ),
        (lambda b: b["Payload"].update(logIndex=1), "SignedEntryTimestamp does not verify"),
        (
            lambda b: b.update(SignedEntryTimestamp=base64.b64encode(b"x" * 70).decode()),
            "SignedEntryTimestamp does not verify",
        ),
        (lambda b: b.pop("Payload"), "lacks Payload"),
        (lambda b: b["Payload"].update(integratedTime="1717082297"), "lacks body"),
        (lambda b: b["Payload"].update(body="!!"), "invalid base64"),
    ],
)
def test_tampered_rekor_bundles_are_refused(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial, change: Any, message: str
) -> None:
    bundle = _rekor_bundle(keyless_capture)
    change(bundle)
    with pytest.raises(proofs.Rejected, match=message):
        keyless(edited(keyless_capture, bundle=json.dumps(bundle)), keyless_trust, PHILIPP)


def test_signature_swapped_for_another_valid_looking_one_is_refused(
    keyless_capture: Capture, alice_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    other = layer_annotations(alice_capture)[cosign.SIGNATURE_ANNOTATION]
    with pytest.raises(proofs.Rejected, match="records a different signature"):
        keyless(edited(keyless_capture, signature=other), keyless_trust, PHILIPP)


def test_keyless_signature_does_not_verify_with_a_key(keyless_capture: Capture) -> None:
    with pytest.raises(proofs.Rejected, match="does not verify"):
        cosign.verify(
            keyless_capture.manifest,
            keyless_capture.blobs,
            digest=KEYLESS_DIGEST,
            authority=key_authority("alice"),
        )


def test_certificate_identity_reads_fulcio_extensions(keyless_capture: Capture) -> None:
    certificate = x509.load_pem_x509_certificate(
        layer_annotations(keyless_capture)[cosign.CERTIFICATE_ANNOTATION].encode()
    )
    identity = authorities.certificate_identity(certificate)
    assert identity.issuer == "https://github.com/login/oauth"
    assert identity.subjects == ("philipp.belitz@securesystems.de",)


# --- made-up signatures ----------------------------------------------------------------------


def own_authority(kind: str = "p256") -> authorities.KeyAuthority:
    public = keys.load(factories.public_pem(factories.private_key(kind)))
    return authorities.KeyAuthority(name=kind, key=public)


@pytest.mark.parametrize("kind", ["p256", "p384", "ed25519", "rsa"])
def test_made_up_signature_counts_only_for_its_digest(kind: str) -> None:
    body = factories.payload(factories.IMAGE_DIGEST)
    manifest, blobs = factories.manifest((body, factories.sign(factories.private_key(kind), body)))
    authority = own_authority(kind)
    assert cosign.verify(manifest, blobs, digest=factories.IMAGE_DIGEST, authority=authority)
    with pytest.raises(proofs.Rejected, match="not the image digest"):
        cosign.verify(manifest, blobs, digest=factories.OTHER_DIGEST, authority=authority)


def test_the_one_good_layer_among_several_counts() -> None:
    body = factories.payload()
    stranger = factories.sign(factories.private_key("p256-other"), body)
    ours = factories.sign(factories.private_key("p256"), body)
    manifest, blobs = factories.manifest((body, stranger), (body, ours))
    verified = cosign.verify(
        manifest, blobs, digest=factories.IMAGE_DIGEST, authority=own_authority()
    )
    assert verified.authority == "p256"
    manifest, blobs = factories.manifest((body, stranger), (body, stranger))
    with pytest.raises(proofs.Rejected, match=r"signature 1: .*; signature 2: "):
        cosign.verify(manifest, blobs, digest=factories.IMAGE_DIGEST, authority=own_authority())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b"{}", "no 'critical' object"),
        (factories.payload(kind="something else"), "critical.type"),
        (factories.payload(digest="sha256:abc"), "wrong length"),
        (factories.payload(digest="md5:" + "0" * 32), "not of the form"),
        (factories.payload(reference=""), "docker-reference"),
        (factories.payload(reference="UPPER/Case"), "docker-reference is invalid"),
        (
            b'{"critical":{"type":"cosign container image signature","type":"x"}}',
            "repeats the key 'type'",
        ),
        (
            json.dumps(
                {
                    "critical": {
                        "identity": {"docker-reference": "a/b"},
                        "image": {"docker-manifest-digest": factories.IMAGE_DIGEST},
                        "type": cosign.SIMPLE_SIGNING_TYPE,
                    },
                    "optional": [1],
                }
            ).encode(),
            "'optional'",
        ),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_payloads_say_why(document: bytes, message: str) -> None:
    with pytest.raises(proofs.Rejected, match=message):
        cosign.parse_payload(document)


def test_payload_parses() -> None:
    parsed = cosign.parse_payload(factories.payload())
    assert parsed == cosign.Payload(
        docker_reference="registry.example/team/app", digest=factories.IMAGE_DIGEST
    )


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda m: m["layers"][0].update(mediaType="application/octet-stream"),
            "not simple signing",
        ),
        (lambda m: m["layers"][0].update(size=1), "the manifest says 1"),
        (lambda m: m["layers"][0].update(digest="sha256:zz"), "not of the form"),
        (lambda m: m["layers"][0].pop("annotations"), "no annotations"),
        (
            lambda m: m["layers"][0]["annotations"].update({cosign.SIGNATURE_ANNOTATION: "%%%"}),
            "not valid base64",
        ),
        (
            lambda m: m["layers"][0]["annotations"].pop(cosign.SIGNATURE_ANNOTATION),
            "has no dev.cosignproject",
        ),
        (
            lambda m: m["layers"][0]["annotations"].update({cosign.CERTIFICATE_ANNOTATION: 5}),
            "not a string",
        ),
    ],
)
def test_malformed_layers_are_problems_not_signatures(mutate: Any, problem: str) -> None:
    body = factories.payload()
    manifest, blobs = factories.manifest(
        (body, factories.sign(factories.private_key("p256"), body))
    )
    mutate(manifest)
    layers = cosign.parse_manifest(manifest, blobs)
    assert layers[0].problem is not None and problem in layers[0].problem
    with pytest.raises(proofs.Rejected, match=problem):
        cosign.verify(manifest, blobs, digest=factories.IMAGE_DIGEST, authority=own_authority())


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"layers": []}, "no layers"),
        ({}, "no layers"),
        ({"mediaType": "application/vnd.oci.image.index.v1+json", "layers": [{}]}, "media type"),
        (b"{", "not valid JSON"),
        (b"[]", "not a JSON object"),
        ({"layers": [{}] * (cosign.MAX_LAYERS + 1)}, "more than"),
    ],
)
def test_malformed_manifests_say_why(manifest: Any, message: str) -> None:
    with pytest.raises(proofs.Rejected, match=message):
        cosign.parse_manifest(manifest, {})


def test_image_digest_must_be_well_formed(alice_capture: Capture) -> None:
    with pytest.raises(proofs.Rejected, match="image digest"):
        cosign.verify(
            alice_capture.manifest,
            alice_capture.blobs,
            digest="latest",
            authority=key_authority("alice"),
        )


# --- identities and trust material -----------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"subject": "a"}, "exactly one of issuer"),
        ({"issuer": "a"}, "exactly one of subject"),
        ({"issuer": "a", "issuer_regexp": "a", "subject": "b"}, "exactly one of issuer"),
        ({"issuer": "", "subject": "b"}, "issuer is empty"),
        ({"issuer": "a", "subject_regexp": "("}, "regexp '\\(' is invalid"),
    ],
)
def test_identities_must_be_complete(arguments: dict[str, str], message: str) -> None:
    with pytest.raises(authorities.InvalidPolicy, match=message):
        authorities.Identity(**arguments)


def test_keyless_authority_needs_an_identity(keyless_trust: trust.TrustMaterial) -> None:
    with pytest.raises(authorities.InvalidPolicy, match="lists no identity"):
        authorities.KeylessAuthority(
            name="k", identities=(), trusted_root=trust.TrustedRoot.from_material(keyless_trust)
        )


def test_trust_material_from_a_trusted_root() -> None:
    material = trust.load_trusted_root(
        fixture("sigstore", "cosign", "trusted_root_pgi.json").read_bytes()
    ).material
    assert material.rekor_keys[0].log_id.startswith("c0d23d6ad406973f")
    assert len(material.authorities) == 2
    assert material.authorities[0].valid_until == datetime.datetime(
        2022, 12, 31, 23, 59, 59, 999000, tzinfo=datetime.UTC
    )
    assert material.ct_keys


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "trusted root is invalid"),
        (b'{"mediaType": "application/json"}', "trusted root|media type"),
        (
            fixture(
                "sigstore", "sigstore-python", "assets", "trusted_root", "trustedroot.badtype.json"
            ).read_bytes(),
            "media type|trusted root is invalid",
        ),
    ],
)
def test_bad_trusted_roots_say_why(data: bytes, message: str) -> None:
    with pytest.raises(trust.InvalidTrustRoot, match=message):
        trust.load_trusted_root(data).material  # noqa: B018 (derived on first use)


def test_trust_material_needs_cas_and_rekor_keys(keyless_trust: trust.TrustMaterial) -> None:
    with pytest.raises(trust.InvalidTrustRoot, match="no Fulcio"):
        dataclasses.replace(keyless_trust, authorities=())
    with pytest.raises(trust.InvalidTrustRoot, match="no Rekor"):
        dataclasses.replace(keyless_trust, rekor_keys=())
    with pytest.raises(trust.InvalidTrustRoot, match="Rekor key"):
        trust.TrustMaterial.from_pem(fulcio=[], rekor=[b"garbage"])
    with pytest.raises(trust.InvalidTrustRoot, match="Fulcio CA PEM"):
        trust.TrustMaterial.from_pem(fulcio=[b"garbage"], rekor=[])


def test_key_with_rekor_needs_the_entry_to_name_that_key(
    keyless_capture: Capture, keyless_trust: trust.TrustMaterial
) -> None:
    # The leaf's own key verifies the signature and the SET is genuine, but Rekor recorded the
    # certificate, not this bare key: the entry does not vouch for a key-based signature.
    certificate = x509.load_pem_x509_certificate(
        layer_annotations(keyless_capture)[cosign.CERTIFICATE_ANNOTATION].encode()
    )
    public = certificate.public_key()
    assert isinstance(public, keys.PublicKey)
    authority = authorities.KeyAuthority(
        name="leaf", key=public, trusted_root=trust.TrustedRoot.from_material(keyless_trust)
    )
    with pytest.raises(proofs.Rejected, match="records a different signer"):
        cosign.verify(
            keyless_capture.manifest,
            keyless_capture.blobs,
            digest=KEYLESS_DIGEST,
            authority=authority,
        )
    # Without the log requirement the same key and signature do count.
    bare = authorities.KeyAuthority(name="leaf", key=public)
    assert cosign.verify(
        keyless_capture.manifest, keyless_capture.blobs, digest=KEYLESS_DIGEST, authority=bare
    )
