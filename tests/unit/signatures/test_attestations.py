"""In-toto attestations made by the real cosign v2 (``.att``) and v3 (bundles), verified."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from muster.signatures.rules import attestations, authorities, keys, proofs, trust
from tests.paths import fixture

pytestmark = pytest.mark.unit

DIGEST = json.loads(fixture("attestations", "image.json").read_text())["digest"]
OTHER = "sha256:" + "1" * 64
SLSA_V1 = "https://slsa.dev/provenance/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
CYCLONEDX = "https://cyclonedx.org/bom"


def authority(name: str) -> authorities.KeyAuthority:
    key = keys.load(fixture("attestations", f"{name}.pub").read_bytes())
    return authorities.KeyAuthority(name=name, key=key)


def legacy_items() -> list[attestations.LegacyAttestation]:
    manifest = json.loads(fixture("attestations", "v2-att-manifest.json").read_text())
    return [
        attestations.LegacyAttestation(
            index=index,
            envelope=fixture("attestations", f"v2-att-layer{index + 1}.dsse.json").read_bytes(),
            annotations=layer["annotations"],
        )
        for index, layer in enumerate(manifest["layers"])
    ]


def bundle(name: str) -> attestations.BundleAttestation:
    return attestations.BundleAttestation(
        fixture("attestations", f"v3-{name}.sigstore.json").read_bytes()
    )


def test_cosign_v2_attestations_verify_with_their_key() -> None:
    verified = [
        attestations.verify(item, digest=DIGEST, authority=authority("alice"))
        for item in legacy_items()
    ]
    assert [v.statement.predicate_type for v in verified] == [SLSA_V1, SLSA_V02, CYCLONEDX]
    assert [item.predicate_type for item in legacy_items()] == [SLSA_V1, SLSA_V02, CYCLONEDX]
    first = verified[0]
    assert first.proof.authority == "alice"
    assert first.proof.format == attestations.FORMAT_LEGACY
    assert first.proof.digest == DIGEST
    predicate = first.statement.predicate
    assert predicate["runDetails"]["builder"]["id"].startswith("https://github.com/acme/app/")
    components = verified[2].statement.predicate["components"]
    assert [c["name"] for c in components] == ["python", "requests", "urllib3"]


@pytest.mark.parametrize(("name", "kind"), [("slsa-v1", SLSA_V1), ("cyclonedx", CYCLONEDX)])
def test_cosign_v3_bundles_verify_with_their_key(name: str, kind: str) -> None:
    verified = attestations.verify(bundle(name), digest=DIGEST, authority=authority("alice"))
    assert verified.statement.predicate_type == kind
    assert verified.proof.format == "sigstore-bundle"
    assert verified.proof.authority == "alice"


@pytest.mark.parametrize("item", [*legacy_items(), bundle("slsa-v1")], ids=str)
def test_a_wrong_signer_proves_nothing(item: attestations.Item) -> None:
    with pytest.raises(proofs.Rejected, match="does not verify"):
        attestations.verify(item, digest=DIGEST, authority=authority("bob"))


@pytest.mark.parametrize("item", [legacy_items()[0], bundle("cyclonedx")], ids=str)
def test_a_statement_about_another_image_proves_nothing(item: attestations.Item) -> None:
    with pytest.raises(proofs.Rejected, match=r"sha256:f5aa|no subject with digest sha256:1111"):
        attestations.verify(item, digest=OTHER, authority=authority("alice"))


def _tampered(item: attestations.LegacyAttestation, change: dict[str, Any]) -> bytes:
    envelope = json.loads(item.envelope)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement.update(change)
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(envelope).encode()


def test_a_changed_statement_no_longer_verifies() -> None:
    item = legacy_items()[0]
    forged = attestations.LegacyAttestation(
        index=0,
        envelope=_tampered(item, {"subject": [{"digest": {"sha256": OTHER[7:]}}]}),
        annotations=item.annotations,
    )
    with pytest.raises(proofs.Rejected, match="DSSE signature does not verify"):
        attestations.verify(forged, digest=OTHER, authority=authority("alice"))


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"payloadType": "x", "payload": "e30=", "signatures": []}', "no signature"),
        (b'{"payloadType": "x", "payload": "!!", "signatures": [{"sig": "AA=="}]}', "base64"),
    ],
)
def test_malformed_envelopes_are_refused(envelope: bytes, message: str) -> None:
    item = attestations.LegacyAttestation(index=0, envelope=envelope, annotations={})
    with pytest.raises(proofs.Rejected, match=message):
        attestations.verify(item, digest=DIGEST, authority=authority("alice"))


def test_legacy_attestations_without_a_log_entry_fail_where_one_is_required() -> None:
    """cosign v2 attested these with --tlog-upload=false: no Rekor bundle, no certificate."""
    root = trust.load_trusted_root(
        fixture("sigstore", "cosign", "trusted_root_pgi.json").read_bytes()
    )
    with_log = authorities.KeyAuthority("alice", authority("alice").key, trusted_root=root)
    with pytest.raises(proofs.Rejected, match="no Rekor bundle"):
        attestations.verify(legacy_items()[0], digest=DIGEST, authority=with_log)
    keyless = authorities.KeylessAuthority(
        "ci", (authorities.Identity(issuer_regexp=".*", subject_regexp=".*"),), root
    )
    with pytest.raises(proofs.Rejected, match="no signing certificate"):
        attestations.verify(legacy_items()[0], digest=DIGEST, authority=keyless)


def test_keyless_bundle_attestation_by_cosign_verifies_against_its_root() -> None:
    """cosign's own keyless attestation bundle (Fulcio certificate, Rekor entry)."""
    root = trust.load_trusted_root(
        fixture("sigstore", "cosign", "trusted_root_pgi.json").read_bytes()
    )
    digest = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
    item = attestations.BundleAttestation(
        fixture("sigstore", "cosign", "oci-attestation.sigstore.json").read_bytes()
    )
    cody = authorities.Identity(issuer="https://github.com/login/oauth", subject="cody@soyland.com")
    keyless = authorities.KeylessAuthority("cody", (cody,), root)
    verified = attestations.verify(item, digest=digest, authority=keyless)
    assert verified.statement.predicate_type == attestations.predicate_type_of("custom")
    assert verified.proof.identity is not None
    assert verified.proof.log_index == 175508996
    someone = authorities.Identity(issuer="https://github.com/login/oauth", subject="eve@x.y")
    with pytest.raises(proofs.Rejected, match=r"expected eve@x\.y"):
        attestations.verify(
            item, digest=digest, authority=authorities.KeylessAuthority("eve", (someone,), root)
        )


def test_cosign_type_names_map_to_predicate_types() -> None:
    assert attestations.predicate_type_of("slsaprovenance1") == SLSA_V1
    assert attestations.predicate_type_of("slsaprovenance02") == SLSA_V02
    assert attestations.predicate_type_of("cyclonedx") == CYCLONEDX
    assert attestations.predicate_type_of("https://example.com/x/v1") == "https://example.com/x/v1"
