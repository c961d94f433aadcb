"""Muster's Notation verifier agrees with the Notary Project's own (notation-go).

Every fixture envelope and tampered variant is judged at every level, with a matching and a
wrong trusted identity, by notation-go (``notationsign -verify``, the reference) and by
:mod:`muster.signatures.rules.notation`: both must admit or refuse alike, and log the same
checks when they admit.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
from pathlib import Path

import cbor2
import pytest
from cryptography import x509

from muster.signatures.rules import notation, proofs
from tests import peers
from tests.paths import fixture

pytestmark = pytest.mark.unit

FOLDER = fixture("notation")
TARGET = json.loads((FOLDER / "target.json").read_text())
IDENTITIES = {
    "matching": "x509.subject: C=US, ST=WA, O=Muster Tests",
    "wrong": "x509.subject: C=US, ST=WA, O=Muster Tests, CN=somebody-else",
}
ENVELOPES = sorted(path.name for path in FOLDER.glob("*.sig"))


def _tampered_jws(name: str) -> bytes:
    document = json.loads((FOLDER / name).read_bytes())
    payload = base64.urlsafe_b64decode(document["payload"] + "==")
    other = payload.replace(TARGET["digest"][-8:].encode(), b"00000000")
    document["payload"] = base64.urlsafe_b64encode(other).rstrip(b"=").decode()
    return json.dumps(document).encode()


def _tampered_cose(name: str) -> bytes:
    message = cbor2.loads((FOLDER / name).read_bytes())
    body = list(message.value)
    body[3] = bytes([body[3][0] ^ 1]) + body[3][1:]
    return bytes(cbor2.dumps(cbor2.CBORTag(18, body)))


CASES = [(name, (FOLDER / name).read_bytes()) for name in ENVELOPES] + [
    ("jws-ec.sig (payload swapped)", _tampered_jws("jws-ec.sig")),
    ("cose-rsa-intermediate.sig (signature flipped)", _tampered_cose("cose-rsa-intermediate.sig")),
]


def _reference(
    tmp_path: Path,
    envelope: bytes,
    format: str,
    level: str,
    identity: str,
    *,
    trust_store: str = "ca.pem",
    tsa_store: str | None = None,
    verify_timestamp: str = "always",
) -> dict[str, object]:
    path = tmp_path / "envelope"
    path.write_bytes(envelope)
    tsa = [f"-tsa-store={FOLDER / tsa_store}"] if tsa_store else []
    done = subprocess.run(
        [
            str(peers.tool("notationsign")),
            f"-verify={path}",
            f"-envelope={format}",
            f"-descriptor={FOLDER / 'target.json'}",
            f"-trust-store={FOLDER / trust_store}",
            f"-level={level}",
            f"-identity={identity}",
            f"-verify-timestamp={verify_timestamp}",
            *tsa,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    verdict: dict[str, object] = json.loads(done.stdout)
    return verdict


def _store(name: str) -> notation.TrustStore:
    certificates = x509.load_pem_x509_certificates((FOLDER / name).read_bytes())
    return notation.TrustStore(name, tuple(certificates))


def _compare(
    reference: dict[str, object], envelope: notation.Envelope, policy: notation.TrustPolicy
) -> None:
    try:
        ours = notation.verify(
            envelope,
            digest=TARGET["digest"],
            policy=policy,
            now=datetime.datetime.now(datetime.UTC),
        )
    except proofs.Rejected as error:
        assert reference["verified"] is False, f"Muster refused ({error}), notation-go admitted"
        return
    assert reference["verified"] is True, (
        f"Muster admitted (logged {ours.logged}), notation-go refused: {reference.get('error')}"
    )
    logged = reference["logged"]
    assert isinstance(logged, list)
    assert {line.split(":")[0] for line in ours.logged} == set(logged)


@pytest.mark.parametrize("level", ["strict", "permissive", "audit"])
@pytest.mark.parametrize("identity", sorted(IDENTITIES))
@pytest.mark.parametrize(("name", "envelope"), CASES, ids=[name for name, _ in CASES])
def test_muster_and_notation_go_reach_the_same_verdict(
    name: str, envelope: bytes, identity: str, level: str, tmp_path: Path
) -> None:
    format = name.split("-")[0]
    reference = _reference(tmp_path, envelope, format, level, IDENTITIES[identity])
    policy = notation.TrustPolicy(
        "test", (_store("ca.pem"),), (IDENTITIES[identity],), level=notation.Level(level)
    )
    media_type = notation.JWS_MEDIA_TYPE if format == "jws" else notation.COSE_MEDIA_TYPE
    _compare(reference, notation.Envelope(media_type, envelope), policy)


# Timestamp countersignatures: envelopes under timestamp-ca.pem, timestamped by tsa-ca.pem's
# TSA; verified with that TSA trust store, with an unrelated one and with none.
TIMESTAMPED = [
    ("jws-timestamped.sig", "timestamp-ca.pem"),
    ("jws-timestamped-expired-certificate.sig", "timestamp-ca.pem"),
    ("cose-timestamped-expired-certificate.sig", "timestamp-ca.pem"),
    ("jws-ec.sig", "ca.pem"),  # no timestamp at all
    ("cose-expired-certificate.sig", "ca.pem"),  # expired, no timestamp
]


@pytest.mark.parametrize("level", ["strict", "audit"])
@pytest.mark.parametrize("option", ["always", "afterCertExpiry"])
@pytest.mark.parametrize("tsa_store", [None, "tsa-ca.pem", "other-ca.pem"])
@pytest.mark.parametrize(("name", "trust_store"), TIMESTAMPED)
def test_timestamps_are_judged_as_notation_go_judges_them(
    name: str, trust_store: str, tsa_store: str | None, option: str, level: str, tmp_path: Path
) -> None:
    envelope = (FOLDER / name).read_bytes()
    format = name.split("-")[0]
    reference = _reference(
        tmp_path,
        envelope,
        format,
        level,
        "*",
        trust_store=trust_store,
        tsa_store=tsa_store,
        verify_timestamp=option,
    )
    policy = notation.TrustPolicy(
        "test",
        (_store(trust_store),),
        ("*",),
        level=notation.Level(level),
        tsa_stores=(_store(tsa_store),) if tsa_store else (),
        verify_timestamp="always" if option == "always" else "afterCertExpiry",
    )
    media_type = notation.JWS_MEDIA_TYPE if format == "jws" else notation.COSE_MEDIA_TYPE
    _compare(reference, notation.Envelope(media_type, envelope), policy)
