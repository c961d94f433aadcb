"""``muster check`` offline with a Notation authority: the policy file holds the ImagePolicy and
its trust-store ConfigMap, the image carries a signature made by the Notary Project's libraries
(``tools/notationsign``) as a referrer on the referrers-capable registry.

Trusted CA and identity: admitted. A trust store holding another CA, or a trusted identity the
signing certificate does not match: denied with the reason, as admission would deny it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster.cli import common
from tests import notary, peers
from tests.checkcli import muster_check

pytestmark = pytest.mark.integration

TRUSTED = "x509.subject: C=US, ST=WA, O=Muster Tests"


@pytest.fixture(scope="module")
def signed(
    referrers_registry: peers.Registry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, notary.Issued]:
    """A Notation-signed image (by tag) and the CA its signing certificate chains to."""
    workdir = tmp_path_factory.mktemp("check-notation")
    ca = notary.ca()
    digest = peers.push_image(referrers_registry, "check-notation/app", "v1", workdir=workdir)
    notary.sign(
        notary.signer(ca),
        workdir,
        reference=f"{referrers_registry.host}/check-notation/app@{digest}",
    )
    return f"{referrers_registry.host}/check-notation/app:v1", ca


def _policy_files(folder: Path, host: str, ca: notary.Issued, identity: str = TRUSTED) -> Path:
    """The ImagePolicy and its trust store ConfigMap, in one file."""
    store = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "release-ca", "namespace": "notation"},
        "data": {"ca.crt": notary.pem(ca.certificate).decode()},
    }
    policy: dict[str, Any] = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": "release"},
        "spec": {
            "images": [f"{host}/check-notation/**"],
            "authorities": [
                {
                    "name": "release-ca",
                    "notation": {
                        "trustStores": [{"namespace": "notation", "name": "release-ca"}],
                        "trustedIdentities": [identity],
                    },
                }
            ],
        },
    }
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump_all([store, policy]))
    return path


def _check(
    registry: peers.Registry, image: str, policy: Path, folder: Path
) -> tuple[int, dict[str, Any], str]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": "ml"},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }
    manifest = folder / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    code, out, err = muster_check(
        "--format", "json", "--insecure-registry", registry.host,
        "--policy", str(policy), str(manifest),
    )  # fmt: skip
    (result,) = json.loads(out)["results"]
    return code, result, err


def test_a_trusted_notation_signature_is_admitted(
    referrers_registry: peers.Registry, signed: tuple[str, notary.Issued], tmp_path: Path
) -> None:
    image, ca = signed
    policy = _policy_files(tmp_path, referrers_registry.host, ca)
    code, result, err = _check(referrers_registry, image, policy, tmp_path)
    assert code == common.EXIT_OK, (result, err)
    assert result["allowed"] is True
    assert result["denials"] == []
    (pin,) = result["patch"]
    assert pin["value"].startswith(f"{image}@sha256:")


def test_a_trust_store_of_another_ca_is_denied_with_the_reason(
    referrers_registry: peers.Registry, signed: tuple[str, notary.Issued], tmp_path: Path
) -> None:
    image, _ = signed
    other = notary.ca("C=US,ST=WA,O=Elsewhere,CN=Other Root")
    policy = _policy_files(tmp_path, referrers_registry.host, other)
    code, result, err = _check(referrers_registry, image, policy, tmp_path)
    assert code == common.EXIT_FAIL, (result, err)
    (denial,) = result["denials"]
    assert denial["check"] == "image-signature"
    assert denial["policy"] == {"kind": "ImagePolicy", "name": "release"}
    assert "does not lead to a CA in trust store(s) notation/release-ca" in denial["message"]


def test_a_signer_outside_the_trusted_identities_is_denied_with_the_reason(
    referrers_registry: peers.Registry, signed: tuple[str, notary.Issued], tmp_path: Path
) -> None:
    image, ca = signed
    policy = _policy_files(
        tmp_path, referrers_registry.host, ca, identity="x509.subject: C=US, ST=WA, O=Acme"
    )
    code, result, err = _check(referrers_registry, image, policy, tmp_path)
    assert code == common.EXIT_FAIL, (result, err)
    (denial,) = result["denials"]
    assert "is rejected by ImagePolicy 'release'" in denial["message"]
    assert (
        "signing certificate subject C=US,ST=WA,L=Seattle,O=Muster Tests,OU=Release,"
        "CN=image-signer is none of the trusted identities x509.subject: C=US, ST=WA, O=Acme"
    ) in denial["message"]


def test_a_trust_store_missing_from_the_files_fails_closed(
    referrers_registry: peers.Registry, signed: tuple[str, notary.Issued], tmp_path: Path
) -> None:
    image, ca = signed
    policy = _policy_files(tmp_path, referrers_registry.host, ca)
    _store, imagepolicy = yaml.safe_load_all(policy.read_text())
    policy.write_text(yaml.safe_dump(imagepolicy))
    code, result, err = _check(referrers_registry, image, policy, tmp_path)
    assert code == common.EXIT_FAIL, (result, err)
    (denial,) = [d for d in result["denials"] if d["check"] == "image-signature"]
    assert denial["reason"] == "ImagePolicyInvalid"
    assert (
        "authority release-ca: ConfigMap notation/release-ca key 'ca.crt' was not found"
        in denial["message"]
    )
    assert "PEM" not in denial["message"]
