"""Keyless cosign v3 image signatures, offline: ``muster image verify`` and ``muster check``.

The real cosign v3 signs with a certificate from a local Fulcio (OIDC issuer and SAN
extensions, an embedded SCT) and logs the DSSE entry in a local Rekor; the bundle is attached
as an OCI referrer (or through the tag fallback). The trusted root comes from a ConfigMap, as
an air-gapped cluster holds it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster.cli import common
from tests import localsigstore, peers
from tests.checkcli import muster_check
from tests.commandline import muster

pytestmark = pytest.mark.integration

SUBJECT = "ci@acme.example"
ROOT = {"namespace": "sigstore", "name": "trusted-root"}
MATERIAL = "ConfigMap/sigstore/trusted-root/trusted_root.json"


@dataclasses.dataclass(frozen=True)
class Keyless:
    sigstore: localsigstore.LocalSigstore
    root: Path  # trusted_root.json
    images: dict[str, str]  # registry kind -> image by tag, signed keyless by SUBJECT


@pytest.fixture(scope="module")
def keyless(
    registry: peers.Registry,
    referrers_registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Keyless]:
    workdir = tmp_path_factory.mktemp("keyless")
    with localsigstore.local_sigstore(workdir) as sigstore:
        signer = sigstore.issue(SUBJECT, label="ci")
        images = {}
        for kind, running in (("fallback", registry), ("referrers", referrers_registry)):
            digest = peers.push_image(running, "keyless/app", "v1", workdir=workdir)
            localsigstore.sign_image(sigstore, signer, f"{running.host}/keyless/app@{digest}")
            images[kind] = running.ref("keyless/app", "v1")
        root = workdir / "trusted_root.json"
        root.write_text(sigstore.trusted_root_json())
        yield Keyless(sigstore=sigstore, root=root, images=images)


def _policy(name: str, identity: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": {
            "images": ["**/keyless/**"],
            "authorities": [
                {"name": "ci", "keyless": {"identities": [identity], "trustedRoot": ROOT}}
            ],
        },
    }


GOOD = {"issuer": localsigstore.GITHUB_ISSUER, "subject": SUBJECT}
WRONG_SUBJECT = {"issuer": localsigstore.GITHUB_ISSUER, "subject": "release@acme.example"}
WRONG_ISSUER = {"issuer": "https://accounts.google.com", "subject": SUBJECT}
FOUND = f"signed by {SUBJECT} (issuer {localsigstore.GITHUB_ISSUER})"


def _verify(keyless: Keyless, image: str, identity: dict[str, str], tmp: Path) -> tuple[int, str]:
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(_policy("keyless", identity)))
    host = image.split("/", 1)[0]
    code, out, err = muster(
        "image", "verify", image, f"--policy={policy}", f"--material={MATERIAL}={keyless.root}",
        f"--insecure-registry={host}", "--format=json",
    )  # fmt: skip
    assert code in (0, 1), err
    return code, out


@pytest.mark.parametrize("kind", ["fallback", "referrers"])
def test_keyless_image_verifies_with_the_right_identity(
    keyless: Keyless, kind: str, tmp_path: Path
) -> None:
    code, out = _verify(keyless, keyless.images[kind], GOOD, tmp_path)
    report = json.loads(out)
    assert code == 0, out
    assert report["verified"] is True
    assert report["policies"][0]["signers"] == ["ci"]


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (WRONG_SUBJECT, f"expected release@acme.example (issuer {localsigstore.GITHUB_ISSUER})"),
        (WRONG_ISSUER, f"expected {SUBJECT} (issuer https://accounts.google.com)"),
    ],
    ids=["wrong-subject", "wrong-issuer"],
)
def test_wrong_identity_is_refused_saying_expected_and_found(
    keyless: Keyless, identity: dict[str, str], expected: str, tmp_path: Path
) -> None:
    code, out = _verify(keyless, keyless.images["referrers"], identity, tmp_path)
    report = json.loads(out)
    assert code == 1, out
    assert report["verified"] is False
    message = json.dumps(report)
    assert FOUND in message, message
    assert expected in message, message


def test_a_root_that_does_not_name_the_ca_refuses(keyless: Keyless, tmp_path: Path) -> None:
    other = localsigstore.LocalSigstore(tmp_path, name="other")
    root = tmp_path / "other-root.json"
    root.write_text(other.trusted_root_json())
    code, out = _verify(
        dataclasses.replace(keyless, root=root), keyless.images["referrers"], GOOD, tmp_path
    )
    assert code == 1, out
    assert "does not chain to a trusted CA" in out, out


def _check_files(keyless: Keyless, identity: dict[str, str], tmp: Path) -> tuple[Path, Path]:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ROOT,
        "data": {"trusted_root.json": keyless.root.read_text()},
    }
    policies = tmp / "policies.yaml"
    policies.write_text(yaml.safe_dump_all([_policy("keyless", identity), config_map]))
    pod = tmp / "pod.yaml"
    pod.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "app", "namespace": "ml"},
                "spec": {"containers": [{"name": "main", "image": keyless.images["fallback"]}]},
            }
        )
    )
    return policies, pod


@pytest.mark.parametrize(
    ("identity", "allowed"),
    [(GOOD, True), (WRONG_SUBJECT, False), (WRONG_ISSUER, False)],
    ids=["right", "wrong-subject", "wrong-issuer"],
)
def test_muster_check_gives_the_same_verdicts(
    keyless: Keyless, identity: dict[str, str], allowed: bool, tmp_path: Path
) -> None:
    policies, pod = _check_files(keyless, identity, tmp_path)
    host = keyless.images["fallback"].split("/", 1)[0]
    code, out, err = muster_check(
        "--format", "json", "--insecure-registry", host, "--policy", str(policies), str(pod)
    )
    (result,) = json.loads(out)["results"]
    assert result["allowed"] is allowed, out
    if allowed:
        assert code == common.EXIT_OK, err
        assert result["patch"][0]["value"].startswith(keyless.images["fallback"] + "@sha256:")
    else:
        assert code == common.EXIT_FAIL, err
        (denial,) = result["denials"]
        assert denial["check"] == "image-signature"
        assert FOUND in denial["message"]
        assert (
            f"expected {identity['subject']} (issuer {identity['issuer']})" in (denial["message"])
        )
