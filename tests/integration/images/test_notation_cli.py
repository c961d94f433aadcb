"""``muster image verify`` with Notation authorities, against the referrers-capable registry.

Signatures are made by the Notary Project's libraries (``tools/notationsign``) and by the real
cosign v3; the trust store is a ``--material`` file standing for its ConfigMap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import notary, peers
from tests.commandline import muster
from tests.integration.images.conftest import Signer, sign_v3
from tests.integration.images.test_cli import write_policy

pytestmark = pytest.mark.integration

STORE = "ConfigMap/notation/release-ca/ca.crt"


def notation_authority(level: str = "strict") -> dict[str, Any]:
    return {
        "name": "release-ca",
        "notation": {
            "trustStores": [{"namespace": "notation", "name": "release-ca"}],
            "trustedIdentities": ["x509.subject: C=US, ST=WA, O=Muster Tests"],
            "signatureVerification": {"level": level},
        },
    }


def verify(
    registry: peers.Registry, image: str, policy: Path, ca: Path
) -> tuple[int, dict[str, Any], str]:
    code, out, err = muster(
        "image",
        "verify",
        image,
        f"--policy={policy}",
        f"--material={STORE}={ca}",
        f"--insecure-registry={registry.host}",
        "--format=json",
    )
    return code, json.loads(out), err


@pytest.fixture
def ca_file(tmp_path: Path) -> tuple[notary.Issued, Path]:
    ca = notary.ca()
    path = tmp_path / "ca.pem"
    path.write_bytes(notary.pem(ca.certificate))
    return ca, path


def test_a_notation_signed_image_verifies_and_a_stranger_does_not(
    referrers_registry: peers.Registry, ca_file: tuple[notary.Issued, Path], tmp_path: Path
) -> None:
    ca, ca_path = ca_file
    digest = peers.push_image(referrers_registry, "cli-notation/app", "v1", workdir=tmp_path)
    pinned = f"{referrers_registry.host}/cli-notation/app@{digest}"
    notary.sign(notary.signer(ca), tmp_path, envelope="cose", reference=pinned)
    spec = {"images": [f"{referrers_registry.host}/cli-notation/**"]}
    strict = write_policy(
        tmp_path / "strict.yaml", "strict", {**spec, "authorities": [notation_authority()]}
    )
    code, report, _ = verify(referrers_registry, pinned, strict, ca_path)
    assert code == 0, report
    assert report["policies"][0]["signers"] == ["release-ca"]
    assert report["policies"][0]["warnings"] == []

    other = tmp_path / "other-ca.pem"
    other.write_bytes(notary.pem(notary.ca("C=US,ST=WA,O=Elsewhere,CN=Other Root").certificate))
    code, report, _ = verify(referrers_registry, pinned, strict, other)
    assert code == 1, report
    assert (
        "does not lead to a CA in trust store(s) notation/release-ca"
        in (report["policies"][0]["message"])
    )

    audit = write_policy(
        tmp_path / "audit.yaml", "audit", {**spec, "authorities": [notation_authority("audit")]}
    )
    code, report, _ = verify(referrers_registry, pinned, audit, other)
    assert code == 0, report
    (warning,) = report["policies"][0]["warnings"]
    assert warning.startswith("release-ca: authenticity: certificate chain of")


def test_two_of_two_a_cosign_bundle_and_a_notation_signature(
    referrers_registry: peers.Registry,
    signers: dict[str, Signer],
    ca_file: tuple[notary.Issued, Path],
    tmp_path: Path,
) -> None:
    """One image, signed by cosign v3 (a Sigstore bundle) and by Notation, both as referrers:
    a threshold of two counts one authority of each kind."""
    ca, ca_path = ca_file
    digest = peers.push_image(referrers_registry, "cli-notation/both", "v1", workdir=tmp_path)
    pinned = f"{referrers_registry.host}/cli-notation/both@{digest}"
    policy = write_policy(
        tmp_path / "both.yaml",
        "both",
        {
            "images": [f"{referrers_registry.host}/cli-notation/**"],
            "threshold": 2,
            "authorities": [
                {"name": "alice", "key": {"data": signers["alice"].pem}},
                notation_authority(),
            ],
        },
    )
    sign_v3(signers["alice"], pinned)
    code, report, _ = verify(referrers_registry, pinned, policy, ca_path)
    assert code == 1, report
    assert (
        "signed by 1 of 2 required authorities (release-ca: no signature found)"
        in (report["policies"][0]["message"])
    )
    notary.sign(notary.signer(ca), tmp_path, reference=pinned)
    code, report, _ = verify(referrers_registry, pinned, policy, ca_path)
    assert code == 0, report
    assert sorted(report["policies"][0]["signers"]) == ["alice", "release-ca"]
