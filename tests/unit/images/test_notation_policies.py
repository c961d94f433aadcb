"""ImagePolicy authorities of kind notation: compiled from trust-store ConfigMaps, judged with
real Notation envelopes, and counted with cosign authorities in one threshold."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from muster.images.rules import policies as imagepolicies
from muster.signatures.rules import cosign, formats, notation, notationformat
from tests import notary
from tests.paths import fixture
from tests.unit.signatures.conftest import ALICE_DIGEST, signature_manifest

pytestmark = pytest.mark.unit

CA = fixture("notation", "ca.pem").read_bytes()
STORE = imagepolicies.Source("ConfigMap", "muster-system", "notary-ca", "ca.crt")
DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
IDENTITY = "x509.subject: C=US, ST=WA, O=Muster Tests"
ALICE = fixture("sigstore", "connaisseur", "alice.key").read_text()
# The judge reads the clock through the format; these tests fix it.
FORMAT = notationformat.NotationFormat(
    clock=lambda: datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)
)


def notation_authority(name: str = "notary", **verification: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "trustStores": [{"namespace": "muster-system", "name": "notary-ca"}],
        "trustedIdentities": [IDENTITY],
    }
    if verification:
        body["signatureVerification"] = verification
    return {"name": name, "notation": body}


def compiled(*authorities: dict[str, Any], threshold: int | None = None) -> Any:
    data: dict[str, Any] = {"images": ["registry.example/**"], "authorities": list(authorities)}
    if threshold is not None:
        data["threshold"] = threshold
    spec = imagepolicies.parse_spec(data)
    return imagepolicies.compile_policy("p", 1, spec, {STORE: CA})


def found(*names: str) -> tuple[formats.Found, ...]:
    envelopes = tuple(
        notation.Envelope(
            notation.JWS_MEDIA_TYPE if name.startswith("jws") else notation.COSE_MEDIA_TYPE,
            fixture("notation", name).read_bytes(),
        )
        for name in names
    )
    return (formats.Found(FORMAT, envelopes),)


def test_the_trust_store_is_a_source_the_gate_fetches() -> None:
    spec = imagepolicies.parse_spec(
        {"images": ["registry.example/**"], "authorities": [notation_authority()]}
    )
    assert imagepolicies.sources_of(spec) == (STORE,)


def test_a_trusted_notation_signature_passes() -> None:
    decision = imagepolicies.judge(
        compiled(notation_authority()),
        imagepolicies.Evidence(digest=DIGEST, signatures=found("cose-ec.sig")),
    )
    assert decision.passed, decision.message
    assert decision.signers == ("notary",) and decision.warnings == ()


def test_an_untrusted_ca_is_not_trusted_and_says_why() -> None:
    decision = imagepolicies.judge(
        compiled(notation_authority()),
        imagepolicies.Evidence(digest=DIGEST, signatures=found("jws-untrusted-ca.sig")),
    )
    assert not decision.passed and decision.reason == "SignatureNotTrusted"
    assert "Notation signature 1: certificate chain of" in decision.message
    assert "notary (Notation strict: trust store muster-system/notary-ca" in decision.message
    # The hint names the tool that makes the signatures this policy accepts.
    assert "it must be signed (notation sign) by notary" in decision.message
    unsigned = imagepolicies.judge(
        compiled(notation_authority()), imagepolicies.Evidence(digest=DIGEST)
    )
    assert unsigned.reason == "ImageNotSigned" and "(notation sign)" in unsigned.message


def test_audit_admits_with_warnings() -> None:
    decision = imagepolicies.judge(
        compiled(notation_authority(level="audit")),
        imagepolicies.Evidence(digest=DIGEST, signatures=found("jws-expired-certificate.sig")),
    )
    assert decision.passed
    assert decision.warnings[0].startswith("notary: authenticTimestamp: certificate ")


def test_an_override_logs_what_strict_would_refuse() -> None:
    policy = compiled(notation_authority(override={"authenticTimestamp": "log"}))
    evidence = imagepolicies.Evidence(
        digest=DIGEST, signatures=found("cose-expired-certificate.sig")
    )
    decision = imagepolicies.judge(policy, evidence)
    assert decision.passed and len(decision.warnings) == 1


@pytest.mark.parametrize(
    ("authority", "error"),
    [
        (
            {"notation": {"trustStores": [], "trustedIdentities": ["*"]}},
            "trustStores: Tuple should have at least 1 item",
        ),
        (
            {
                "notation": {
                    "trustStores": [{"namespace": "a", "name": "b"}],
                    "trustedIdentities": ["x509.subject: CN=me"],
                }
            },
            "lacks C, ST, O",
        ),
        (
            {
                "notation": {
                    "trustStores": [{"namespace": "a", "name": "b"}],
                    "trustedIdentities": ["*"],
                    "signatureVerification": {"level": "skip"},
                }
            },
            "signatureVerification.level",
        ),
    ],
)
def test_unusable_notation_authorities_are_refused(authority: dict[str, Any], error: str) -> None:
    with pytest.raises(imagepolicies.InvalidImagePolicy, match=error):
        imagepolicies.parse_spec({"images": ["registry.example/**"], "authorities": [authority]})


def test_a_trust_store_that_is_not_pem_is_refused() -> None:
    spec = imagepolicies.parse_spec(
        {"images": ["registry.example/**"], "authorities": [notation_authority()]}
    )
    with pytest.raises(imagepolicies.InvalidImagePolicy, match="is not PEM certificates"):
        imagepolicies.compile_policy("p", 1, spec, {STORE: b"not a certificate"})


# --- thresholds count Notation and cosign authorities together ---------------------------------


@pytest.fixture(scope="module")
def alice_notation(tmp_path_factory: pytest.TempPathFactory) -> tuple[notation.Envelope, bytes]:
    """A Notation signature, by the Notary Project's libraries, on the digest alice signed;
    and its CA."""
    workdir: Path = tmp_path_factory.mktemp("notation")
    root = notary.ca()
    descriptor = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": ALICE_DIGEST,
        "size": 1,
    }
    out = workdir / "alice.sig"
    notary.sign(notary.signer(root), workdir, envelope="cose", descriptor=descriptor, out=out)
    envelope = notation.Envelope(notation.COSE_MEDIA_TYPE, out.read_bytes())
    return envelope, notary.pem(root.certificate)


def _both(envelope: notation.Envelope) -> tuple[formats.Found, ...]:
    capture = signature_manifest(ALICE_DIGEST)
    legacy = cosign.LegacySignature(json.dumps(capture.manifest).encode(), capture.blobs)
    return (formats.Found(FORMAT, (envelope,)), formats.Found(cosign.FORMAT, (legacy,)))


def _alice_policy(threshold: int, ca: bytes) -> Any:
    data = {
        "images": ["registry.example/**"],
        "threshold": threshold,
        "authorities": [{"name": "alice", "key": {"data": ALICE}}, notation_authority()],
    }
    spec = imagepolicies.parse_spec(data)
    return imagepolicies.compile_policy("p", 1, spec, {STORE: ca})


def test_a_cosign_key_and_a_notation_authority_make_two_of_two(
    alice_notation: tuple[notation.Envelope, bytes],
) -> None:
    envelope, ca = alice_notation
    evidence = imagepolicies.Evidence(digest=ALICE_DIGEST, signatures=_both(envelope))
    decision = imagepolicies.judge(_alice_policy(2, ca), evidence)
    assert decision.passed, decision.message
    assert set(decision.signers) == {"alice", "notary"}


def test_one_of_two_when_the_notation_signer_is_not_trusted(
    alice_notation: tuple[notation.Envelope, bytes],
) -> None:
    envelope, _ = alice_notation
    evidence = imagepolicies.Evidence(digest=ALICE_DIGEST, signatures=_both(envelope))
    # The trust store holds the fixtures' CA, not the one that signed this envelope.
    assert imagepolicies.judge(_alice_policy(1, CA), evidence).signers == ("alice",)
    refused = imagepolicies.judge(_alice_policy(2, CA), evidence)
    assert not refused.passed
    assert "signed by 1 of 2 required authorities (notary: Notation signature 1:" in (
        refused.message
    )
    # The cosign signature is never judged for the Notation authority, nor the other way.
    assert "legacy signature" not in refused.message


def test_tsa_trust_stores_let_a_timestamped_expired_certificate_count() -> None:
    signers = imagepolicies.Source("ConfigMap", "muster-system", "stamped-ca", "ca.crt")
    tsa = imagepolicies.Source("ConfigMap", "muster-system", "tsa", "ca.crt")
    authority = {
        "name": "stamped",
        "notation": {
            "trustStores": [{"namespace": "muster-system", "name": "stamped-ca"}],
            "tsaTrustStores": [{"namespace": "muster-system", "name": "tsa"}],
            "trustedIdentities": ["*"],
            "signatureVerification": {"verifyTimestamp": "afterCertExpiry"},
        },
    }
    spec = imagepolicies.parse_spec({"images": ["registry.example/**"], "authorities": [authority]})
    assert imagepolicies.sources_of(spec) == (signers, tsa)
    materials = {
        signers: fixture("notation", "timestamp-ca.pem").read_bytes(),
        tsa: fixture("notation", "tsa-ca.pem").read_bytes(),
    }
    policy = imagepolicies.compile_policy("p", 1, spec, materials)
    evidence = imagepolicies.Evidence(
        digest=DIGEST, signatures=found("cose-timestamped-expired-certificate.sig")
    )
    decision = imagepolicies.judge(policy, evidence)
    assert decision.passed, decision.message
    materials[tsa] = CA  # another TSA root: the timestamp no longer counts
    refused = imagepolicies.judge(imagepolicies.compile_policy("p", 2, spec, materials), evidence)
    assert not refused.passed
    assert "timestamp countersignature does not verify with the TSA trust store(s)" in (
        refused.message
    )
