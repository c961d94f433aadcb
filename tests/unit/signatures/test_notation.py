"""Notation signatures made by the Notary Project's own libraries, judged by Muster's verifier.

The envelopes are the committed ones of ``tests/fixtures/notation`` (see its MANIFEST); the
tampered variants are derived from them here, so every rejection is of a real envelope that
was changed in one place.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509

from muster.signatures.rules import notation, proofs
from tests import notary, paths
from tests.paths import fixture

pytestmark = pytest.mark.unit

DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
NOW = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)
IDENTITY = "x509.subject: C=US, ST=WA, O=Muster Tests, CN=image-signer"
TRUSTED = ("jws-ec.sig", "cose-ec.sig", "jws-rsa-intermediate.sig", "cose-rsa-intermediate.sig")


def store(name: str = "ca.pem", store_name: str = "acme") -> notation.TrustStore:
    certificates = x509.load_pem_x509_certificates(fixture("notation", name).read_bytes())
    return notation.TrustStore(store_name, tuple(certificates))


def policy(
    level: str = "strict",
    identities: tuple[str, ...] = (IDENTITY,),
    stores: tuple[notation.TrustStore, ...] | None = None,
    **overrides: str,
) -> notation.TrustPolicy:
    return notation.TrustPolicy(
        name="images",
        trust_stores=(store(),) if stores is None else stores,
        trusted_identities=identities,
        level=notation.Level(level),
        overrides={notation.Check(check): action for check, action in overrides.items()},  # type: ignore[misc]
    )


def envelope(name: str) -> notation.Envelope:
    media_type = notation.JWS_MEDIA_TYPE if name.startswith("jws") else notation.COSE_MEDIA_TYPE
    return notation.Envelope(media_type, fixture("notation", name).read_bytes())


def judge(
    item: notation.Envelope | str, rules: notation.TrustPolicy | None = None, **kwargs: object
) -> notation.Verified:
    found = envelope(item) if isinstance(item, str) else item
    now = kwargs.get("now", NOW)
    assert isinstance(now, datetime.datetime)
    return notation.verify(found, digest=DIGEST, policy=rules or policy(), now=now)


# ---------------------------------------------------------------------------------------------
# Trusted


@pytest.mark.parametrize("name", TRUSTED)
def test_signatures_under_the_trusted_ca_verify(name: str) -> None:
    verified = judge(name)
    assert verified.format == name.split("-")[0]
    assert verified.digest == DIGEST
    assert verified.trust_store == "acme"
    assert verified.trusted_identity == IDENTITY
    assert verified.signer == "C=US,ST=WA,L=Seattle,O=Muster Tests,OU=Release,CN=image-signer"
    assert verified.logged == ()
    assert verified.timestamp == "none"
    proof = verified.proof("notary")
    assert proof.format == "notation" and proof.authority == "notary" and proof.warnings == ()
    assert "trust store acme" in proof.signer


def test_the_payload_names_the_descriptor_that_was_signed() -> None:
    target = json.loads(fixture("notation", "target.json").read_text())
    signed = notation.parse(envelope("jws-ec.sig"))
    assert json.loads(signed.payload) == {"targetArtifact": target}
    assert signed.scheme == "notary.x509" and signed.signing_agent is not None


def test_any_identity_matches_with_a_star() -> None:
    assert judge("cose-ec.sig", policy(identities=("*",))).trusted_identity == "*"


def test_an_identity_is_a_subset_of_the_subject_and_S_means_ST() -> None:
    wanted = "x509.subject: C=US, S=WA, O=Muster Tests, OU=Release"
    assert judge("jws-ec.sig", policy(identities=(wanted,))).trusted_identity == wanted


def test_a_signature_for_another_digest_is_refused() -> None:
    with pytest.raises(proofs.Rejected, match=r"not the image digest sha256:0{64}"):
        notation.verify(
            envelope("jws-ec.sig"), digest="sha256:" + "0" * 64, policy=policy(), now=NOW
        )


# ---------------------------------------------------------------------------------------------
# Untrusted CA, wrong identity


@pytest.mark.parametrize("level", ["strict", "permissive"])
def test_an_untrusted_ca_is_refused(level: str) -> None:
    with pytest.raises(proofs.Rejected, match="does not lead to a CA in trust store"):
        judge("jws-untrusted-ca.sig", policy(level))


def test_the_untrusted_signer_verifies_against_its_own_ca() -> None:
    own = policy(
        identities=("x509.subject: C=US, ST=WA, O=Somebody Else",),
        stores=(store("other-ca.pem", "others"),),
    )
    assert judge("jws-untrusted-ca.sig", own).trust_store == "others"


@pytest.mark.parametrize("name", ["jws-ec.sig", "cose-rsa-intermediate.sig"])
def test_a_wrong_identity_is_refused(name: str) -> None:
    wrong = "x509.subject: C=US, ST=WA, O=Muster Tests, CN=somebody-else"
    with pytest.raises(proofs.Rejected, match="is none of the trusted identities"):
        judge(name, policy(identities=(wrong,)))


def test_audit_admits_an_untrusted_signature_and_says_why() -> None:
    verified = judge("jws-untrusted-ca.sig", policy("audit"))
    assert verified.trust_store is None and verified.trusted_identity is None
    assert len(verified.logged) == 2
    assert verified.logged[0].startswith("authenticity: certificate chain of")
    assert verified.proof("notary").warnings == verified.logged


# ---------------------------------------------------------------------------------------------
# Expiry


@pytest.mark.parametrize("name", ["jws-expired-certificate.sig", "cose-expired-certificate.sig"])
def test_an_expired_certificate_is_refused_in_strict(name: str) -> None:
    with pytest.raises(proofs.Rejected, match=r"expired at 2026-02-01T00:00:00\+00:00 and there"):
        judge(name)


@pytest.mark.parametrize("level", ["permissive", "audit"])
def test_an_expired_certificate_is_only_logged_below_strict(level: str) -> None:
    verified = judge("jws-expired-certificate.sig", policy(level))
    assert verified.trust_store == "acme"
    assert [line.split(":")[0] for line in verified.logged] == ["authenticTimestamp"]


def test_the_expired_certificate_was_good_while_it_was_valid() -> None:
    during = datetime.datetime(2026, 1, 20, tzinfo=datetime.UTC)
    assert judge("cose-expired-certificate.sig", now=during).logged == ()


def test_an_override_can_skip_the_timestamp_check() -> None:
    verified = judge("jws-expired-certificate.sig", policy(authenticTimestamp="skip"))
    assert verified.logged == () and notation.Check.AUTHENTIC_TIMESTAMP in verified.skipped


@pytest.mark.parametrize("name", ["jws-signature-expiry.sig", "cose-signature-expiry.sig"])
def test_an_expired_signature_is_refused_in_strict_and_logged_in_permissive(name: str) -> None:
    with pytest.raises(proofs.Rejected, match=r"signature expired at 2026-01-15T01:00:00\+00:00"):
        judge(name)
    assert judge(name, policy("permissive")).logged[0].startswith("expiry: ")
    signed = notation.parse(envelope(name))
    assert "io.cncf.notary.expiry" in signed.critical


# ---------------------------------------------------------------------------------------------
# Tampered envelopes: integrity is enforced at every level


def _jws(name: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(fixture("notation", name).read_bytes())
    return document


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: object) -> bytes:
    assert isinstance(text, str)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jws_envelope(document: dict[str, object]) -> notation.Envelope:
    return notation.Envelope(notation.JWS_MEDIA_TYPE, json.dumps(document).encode())


def _cose(name: str) -> list[object]:
    message = cbor2.loads(fixture("notation", name).read_bytes())
    return list(message.value)


def _cose_envelope(body: list[object]) -> notation.Envelope:
    return notation.Envelope(notation.COSE_MEDIA_TYPE, cbor2.dumps(cbor2.CBORTag(18, body)))


def _other_payload(payload: bytes) -> bytes:
    return payload.replace(DIGEST.encode(), b"sha256:" + b"1" * 64)


@pytest.mark.parametrize("level", ["strict", "audit"])
def test_a_jws_with_another_payload_is_refused(level: str) -> None:
    document = _jws("jws-ec.sig")
    document["payload"] = _b64(_other_payload(_unb64(document["payload"])))
    with pytest.raises(proofs.Rejected, match="JWS signature does not verify"):
        judge(_jws_envelope(document), policy(level))


def test_a_jws_with_a_changed_signing_time_is_refused() -> None:
    document = _jws("jws-rsa-intermediate.sig")
    header = json.loads(_unb64(document["protected"]))
    header["io.cncf.notary.signingTime"] = "2030-01-01T00:00:00Z"
    document["protected"] = _b64(json.dumps(header).encode())
    with pytest.raises(proofs.Rejected, match="JWS signature does not verify"):
        judge(_jws_envelope(document), policy("audit"))


def test_a_jws_with_a_flipped_signature_bit_is_refused() -> None:
    document = _jws("jws-ec.sig")
    signature = bytearray(_unb64(document["signature"]))
    signature[5] ^= 1
    document["signature"] = _b64(bytes(signature))
    with pytest.raises(proofs.Rejected, match="JWS signature does not verify"):
        judge(_jws_envelope(document))


def test_a_jws_whose_chain_was_swapped_for_a_trusted_one_is_refused() -> None:
    """The untrusted signer's envelope, with the trusted signer's certificates pasted in."""
    document = _jws("jws-untrusted-ca.sig")
    header = document["header"]
    assert isinstance(header, dict)
    header["x5c"] = _jws("jws-ec.sig")["header"]["x5c"]  # type: ignore[index]
    with pytest.raises(proofs.Rejected, match="JWS signature does not verify"):
        judge(_jws_envelope(document), policy("audit"))


def test_an_unknown_critical_header_is_refused() -> None:
    document = _jws("jws-ec.sig")
    header = json.loads(_unb64(document["protected"]))
    header["crit"] = [*header["crit"], "io.example.mustUnderstand"]
    header["io.example.mustUnderstand"] = True
    document["protected"] = _b64(json.dumps(header).encode())
    with pytest.raises(proofs.Rejected, match="unsupported critical headers"):
        judge(_jws_envelope(document))


@pytest.mark.parametrize("level", ["strict", "audit"])
def test_a_cose_with_another_payload_is_refused(level: str) -> None:
    body = _cose("cose-ec.sig")
    payload = body[2]
    assert isinstance(payload, bytes)
    body[2] = _other_payload(payload)
    with pytest.raises(proofs.Rejected, match="COSE signature does not verify"):
        judge(_cose_envelope(body), policy(level))


def test_a_cose_with_a_changed_protected_header_is_refused() -> None:
    body = _cose("cose-rsa-intermediate.sig")
    protected_raw = body[0]
    assert isinstance(protected_raw, bytes)
    protected = dict(cbor2.loads(protected_raw))
    protected["io.cncf.notary.signingTime"] = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    body[0] = cbor2.dumps(protected, datetime_as_timestamp=True)
    with pytest.raises(proofs.Rejected, match="COSE signature does not verify"):
        judge(_cose_envelope(body))


def test_a_cose_envelope_is_not_read_as_a_jws_or_the_other_way() -> None:
    with pytest.raises(proofs.Rejected, match="JWS envelope is not JSON"):
        judge(notation.Envelope(notation.JWS_MEDIA_TYPE, envelope("cose-ec.sig").blob))
    with pytest.raises(proofs.Rejected, match="not a tagged COSE_Sign1"):
        judge(notation.Envelope(notation.COSE_MEDIA_TYPE, b"\xa0"))
    with pytest.raises(proofs.Rejected, match="is not JWS or COSE"):
        judge(notation.Envelope("application/octet-stream", envelope("jws-ec.sig").blob))


# ---------------------------------------------------------------------------------------------
# Revocation and skip


def test_a_chain_that_names_a_crl_is_refused_in_strict_and_logged_in_permissive(
    tmp_path: Path,
) -> None:
    root = notary.ca()
    issued = notary.signer(root, crl="http://crl.example.invalid/ca.crl")
    out = tmp_path / "revocable.sig"
    notary.sign(issued, tmp_path, descriptor=notary.FIXTURE_TARGET, out=out)
    found = notation.Envelope(notation.JWS_MEDIA_TYPE, out.read_bytes())
    trusted = (notation.TrustStore("fresh", (root.certificate,)),)
    with pytest.raises(proofs.Rejected, match="fetches no OCSP or CRL"):
        judge(found, policy(stores=trusted))
    assert judge(found, policy("permissive", stores=trusted)).logged[0].startswith("revocation:")


def test_skip_verifies_nothing_and_says_so() -> None:
    skip = notation.TrustPolicy("dev", (), (), level=notation.Level.SKIP)
    verified = notation.verify(None, digest=DIGEST, policy=skip, now=NOW)
    assert verified.format == "none"
    assert "skips Notation verification" in verified.proof("dev").signer
    with pytest.raises(proofs.Rejected, match="no Notation signature"):
        notation.verify(None, digest=DIGEST, policy=policy(), now=NOW)


# ---------------------------------------------------------------------------------------------
# Trust policies that cannot be used


@pytest.mark.parametrize(
    ("identities", "level", "overrides", "message"),
    [
        (("x509.subject: C=US, O=Acme",), "strict", {}, "lacks ST"),
        (("x509.subject: C=US+ST=WA, O=Acme",), "strict", {}, "multi-valued RDN"),
        (("x509.subject: C=US, ST=WA, O=Acme, O=Other",), "strict", {}, "repeats the attribute O"),
        (("x509.subject: C=US, ST=WA, O=#0403414243",), "strict", {}, "'=#' values"),
        (("subject: C=US",), "strict", {}, "is not 'x509.subject: <DN>' or '\\*'"),
        (("*", IDENTITY), "strict", {}, "'\\*' must be the only trusted identity"),
        ((), "strict", {}, "lists no trusted identity"),
        ((IDENTITY,), "strict", {"integrity": "log"}, "integrity cannot be overridden"),
        ((IDENTITY,), "skip", {}, "level skip takes no trust stores"),
    ],
)
def test_unusable_policies_are_refused(
    identities: tuple[str, ...], level: str, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(notation.InvalidTrustPolicy, match=message):
        notation.TrustPolicy(
            name="images",
            trust_stores=(store(),),
            trusted_identities=identities,
            level=notation.Level(level),
            overrides={notation.Check(k): v for k, v in overrides.items()},  # type: ignore[misc]
        )


def test_scopes_are_star_or_exact_repositories() -> None:
    scoped = notation.TrustPolicy(
        "p", (store(),), ("*",), registry_scopes=("registry.example/team/app",)
    )
    assert scoped.applies_to("registry.example/team/app")
    assert not scoped.applies_to("registry.example/team/app2")
    assert policy().applies_to("anything/at/all")


@pytest.mark.parametrize(
    "name",
    [
        "regression-unknown-key-type",
        "regression-malformed-subject",
        "regression-duplicate-extension",
    ],
)
def test_inputs_the_fuzzer_found_are_refused_with_a_reason(name: str) -> None:
    """Envelopes whose certificates cryptography reads lazily (an unknown key type, a broken
    subject, a repeated extension): refused as Rejected, at every level, never another error."""
    data = (paths.REPO / "fuzz" / "corpus" / "notation" / name).read_bytes()
    for media_type in (notation.JWS_MEDIA_TYPE, notation.COSE_MEDIA_TYPE):
        for level in ("strict", "audit"):
            with pytest.raises(proofs.Rejected):
                judge(notation.Envelope(media_type, data), policy(level))


def test_a_timestamp_is_noticed_but_never_extends_a_certificate() -> None:
    """The timestamp countersignature is an unprotected header: not verified, it is reported,
    and an expired signing certificate stays expired."""
    for name in ("jws-ec.sig", "jws-expired-certificate.sig"):
        document = _jws(name)
        header = document["header"]
        assert isinstance(header, dict)
        header["io.cncf.notary.timestampSignature"] = base64.b64encode(b"not checked").decode()
        stamped = _jws_envelope(document)
        if name == "jws-ec.sig":
            verified = judge(stamped)
            assert verified.timestamp == "present, not verified"
            assert "its timestamp not verified" in verified.proof("notary").signer
        else:
            with pytest.raises(proofs.Rejected, match="no verified timestamp"):
                judge(stamped)


# ---------------------------------------------------------------------------------------------
# Timestamp countersignatures verified against a TSA trust store


def stamped_policy(level: str = "strict", **options: Any) -> notation.TrustPolicy:
    return notation.TrustPolicy(
        "stamped",
        (store("timestamp-ca.pem", "signers"),),
        ("*",),
        level=notation.Level(level),
        tsa_stores=(store("tsa-ca.pem", "tsa"),),
        **options,
    )


@pytest.mark.parametrize(
    "name", ["jws-timestamped-expired-certificate.sig", "cose-timestamped-expired-certificate.sig"]
)
def test_a_trusted_timestamp_vouches_for_a_certificate_since_expired(name: str) -> None:
    verified = judge(name, stamped_policy())
    assert verified.timestamp == "2026-01-15T00:00:00+00:00"
    assert verified.logged == ()
    assert "timestamped 2026-01-15T00:00:00+00:00" in verified.proof("notary").signer
    without = notation.TrustPolicy("plain", (store("timestamp-ca.pem", "signers"),), ("*",))
    with pytest.raises(proofs.Rejected, match="no verified timestamp"):
        judge(name, without)


def test_a_timestamp_from_an_untrusted_tsa_does_not_count() -> None:
    other = notation.TrustPolicy(
        "other",
        (store("timestamp-ca.pem", "signers"),),
        ("*",),
        tsa_stores=(store("other-ca.pem", "elsewhere"),),
    )
    with pytest.raises(proofs.Rejected, match="does not verify with the TSA trust store"):
        judge("jws-timestamped-expired-certificate.sig", other)


def test_a_timestamp_of_another_signature_does_not_count() -> None:
    """The countersignature of one envelope pasted into another: its imprint is of the other
    signature value."""
    donor = _jws("jws-timestamped.sig")["header"]
    document = _jws("jws-timestamped-expired-certificate.sig")
    header = document["header"]
    assert isinstance(header, dict) and isinstance(donor, dict)
    header["io.cncf.notary.timestampSignature"] = donor["io.cncf.notary.timestampSignature"]
    with pytest.raises(proofs.Rejected, match="Mismatch between messages"):
        judge(_jws_envelope(document), stamped_policy())


def test_a_damaged_timestamp_does_not_count_and_audit_logs_it() -> None:
    document = _jws("jws-timestamped-expired-certificate.sig")
    header = document["header"]
    assert isinstance(header, dict)
    token = bytearray(base64.b64decode(header["io.cncf.notary.timestampSignature"]))
    token[-10] ^= 1
    header["io.cncf.notary.timestampSignature"] = base64.b64encode(bytes(token)).decode()
    with pytest.raises(proofs.Rejected, match="timestamp countersignature does not verify"):
        judge(_jws_envelope(document), stamped_policy())
    logged = judge(_jws_envelope(document), stamped_policy("audit")).logged
    assert [line.split(":")[0] for line in logged] == ["authenticTimestamp"]


def test_with_a_tsa_store_a_timestamp_is_required_unless_only_after_expiry() -> None:
    plain = envelope("jws-ec.sig")
    always = notation.TrustPolicy(
        "always", (store(),), ("*",), tsa_stores=(store("tsa-ca.pem", "tsa"),)
    )
    with pytest.raises(proofs.Rejected, match="carries no timestamp countersignature"):
        judge(plain, always)
    after = dataclasses.replace(always, verify_timestamp="afterCertExpiry")
    assert judge(plain, after).timestamp == "none"
