"""Keyless model provenance: ``cosign attest-blob`` with a certificate from a local test CA
standing in for Fulcio (OIDC issuer and SAN extensions) and its entry in a local Rekor v1 and
v2; verified by identity against a trusted root read from a ConfigMap, as the operator reads it.
A wrong identity or issuer is refused, saying what was expected."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from muster.models import provenancing
from muster.models.rules import registry as modelregistry
from muster.platform import objectstore
from tests import localsigstore
from tests import modelprovenance as making

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "5a" * 32
WORKFLOW = "https://github.com/acme/models/.github/workflows/train.yml@refs/heads/main"


def _verify(bundle: str, root: str, identity: dict[str, str]) -> provenancing.Outcome:
    store = objectstore.ObjectStore(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "sigstore-root", "namespace": "muster"},
                "data": {"trusted_root.json": root},
            }
        ]
    )
    spec: dict[str, Any] = {
        "digest": DIGEST,
        "provenance": {
            "bundle": bundle,
            "authorities": [
                {
                    "name": "training-ci",
                    "keyless": {
                        "identities": [identity],
                        "trustedRoot": {"namespace": "muster", "name": "sigstore-root"},
                    },
                }
            ],
        },
    }
    model = modelregistry.ModelSpec.model_validate(spec)
    return asyncio.run(provenancing.verify(model, provenancing.reader(store)))


@pytest.mark.parametrize("rekor", [1, 2])
def test_keyless_provenance_verifies_by_identity_with_a_trusted_root_from_a_configmap(
    tmp_path: Path, rekor: int
) -> None:
    with localsigstore.local_sigstore(tmp_path) as sigstore:
        signer = sigstore.issue(WORKFLOW)
        bundle = making.attest_keyless(sigstore, signer, DIGEST, tmp_path, rekor=rekor)
        root = sigstore.trusted_root_json()
    right = {"issuer": signer.issuer, "subject": WORKFLOW}
    verified, reason, message = _verify(bundle, root, right)
    assert verified is not None, message
    assert (reason, verified.builder) == ("Verified", making.BUILDER)
    assert WORKFLOW in verified.signer
    regexp = {"issuer": signer.issuer, "subjectRegExp": r"https://github\.com/acme/.*"}
    assert _verify(bundle, root, regexp)[0] is not None
    for wrong in (
        {"issuer": signer.issuer, "subject": WORKFLOW.replace("acme", "evil")},
        {"issuer": "https://accounts.example.com", "subject": WORKFLOW},
    ):
        verified, reason, message = _verify(bundle, root, wrong)
        assert (verified, reason) == (None, "ProvenanceNotVerified")
        assert f"signed by {WORKFLOW} (issuer {signer.issuer}), expected" in message
    # The ConfigMap missing: said, not guessed at.
    missing = _verify(bundle, "{}", right)
    assert missing[0] is None
    assert "trusted root is invalid" in missing[2]
