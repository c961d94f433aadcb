"""A real Rekor v2 bundle (staging Sigstore, hashedrekord/0.0.2 over DSSE) through the image
bundle entry point, and what a root that cannot vouch for it makes the refusal say.

The sigstore-conformance cases run every Rekor v2 case through ``muster sigstore verify-bundle``;
here the same public bundle goes through :func:`bundles.verify_image`, the path an image's
keyless authority takes, with the statement's subject standing for the image digest.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from muster.signatures.rules import authorities, bundles, proofs, trust
from tests.paths import fixture

pytestmark = pytest.mark.unit

CASE = fixture("sigstore", "conformance", "bundle-verify", "rekor2-dsse-happy-path")
IDENTITY = authorities.Identity(
    issuer="https://token.actions.githubusercontent.com",
    subject=(
        "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
        ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
    ),
)


def _bundle() -> dict[str, Any]:
    return dict(json.loads((CASE / "bundle.sigstore.json").read_text()))


def _root() -> dict[str, Any]:
    return dict(json.loads((CASE / "trusted_root.json").read_text()))


def _statement(bundle: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"])))


def _verify(bundle: dict[str, Any], root: dict[str, Any]) -> proofs.Proof:
    statement = _statement(bundle)
    digest = "sha256:" + statement["subject"][0]["digest"]["sha256"]
    authority = authorities.KeylessAuthority(
        name="beacon",
        identities=(IDENTITY,),
        trusted_root=trust.load_trusted_root(json.dumps(root)),
    )
    return bundles.verify_image(
        json.dumps(bundle).encode(),
        digest=digest,
        authority=authority,
        predicate_type=statement["predicateType"],
    )


def test_a_rekor_v2_entry_verifies_through_the_image_path() -> None:
    bundle = _bundle()
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    assert "integratedTime" not in entry and "inclusionPromise" not in entry
    proof = _verify(bundle, _root())
    assert proof.identity is not None and proof.identity.subjects == (IDENTITY.subject,)
    assert proof.log_index == int(entry["logIndex"])
    assert proof.integrated_time is None  # Rekor v2 signs no time; the TSA's stamp gave it


def test_a_root_without_the_v2_log_names_the_log() -> None:
    bundle = _bundle()
    log_id = base64.b64decode(bundle["verificationMaterial"]["tlogEntries"][0]["logId"]["keyId"])
    root = _root()
    root["tlogs"] = [
        log for log in root["tlogs"] if base64.b64decode(log["logId"]["keyId"]) != log_id
    ]
    with pytest.raises(proofs.Rejected) as refused:
        _verify(bundle, root)
    assert str(refused.value) == (
        f"the transparency log entry is from log {log_id.hex()}, which the trusted root does "
        "not list"
    )


def test_a_timestamp_from_no_authority_of_the_root_gives_no_signing_time() -> None:
    root = _root()
    other = copy.deepcopy(root["timestampAuthorities"][0])
    # Another authority's certificates: the bundle's stamp no longer chains to the root.
    other["certChain"]["certificates"] = root["certificateAuthorities"][0]["certChain"][
        "certificates"
    ]
    root["timestampAuthorities"] = [other]
    with pytest.raises(proofs.Rejected) as refused:
        _verify(_bundle(), root)
    assert "no verified signing time" in str(refused.value)


def test_a_checkpoint_for_another_tree_is_refused() -> None:
    bundle = _bundle()
    proof = bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    note, _, signatures = proof["checkpoint"]["envelope"].partition("\n\n")
    origin, size, root_hash = note.split("\n")[:3]
    proof["checkpoint"]["envelope"] = f"{origin}\n{int(size) + 1}\n{root_hash}\n\n{signatures}"
    with pytest.raises(proofs.Rejected) as refused:
        _verify(bundle, _root())
    assert "checkpoint: invalid signature" in str(refused.value)
