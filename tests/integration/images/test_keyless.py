"""Keyless cosign v3 image signatures, offline: ``muster image verify`` and ``muster check``.

The real cosign v3 signs with a certificate from a local Fulcio (OIDC issuer and SAN
extensions, an embedded SCT) and logs the DSSE entry in a local Rekor; the bundle is attached
as an OCI referrer (or through the tag fallback). The trusted root comes from a ConfigMap, as
an air-gapped cluster holds it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster.cli import common
from muster.signatures.rules import authorities, bundles, proofs, trust
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
    images: dict[str, str]  # "<registry kind>-rekor<1|2>" -> image by tag, signed by SUBJECT
    bundles: dict[int, tuple[bytes, str]]  # the referrers registry's: rekor version -> bundle


def _bundle(registry: peers.Registry, repository: str, digest: str) -> bytes:
    """The bundle cosign attached, read back through the OCI 1.1 referrers API."""

    def get(path: str, accept: str = "application/vnd.oci.image.manifest.v1+json") -> bytes:
        request = urllib.request.Request(
            f"http://{registry.host}/v2/{repository}/{path}", headers={"Accept": accept}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback registry
            return bytes(response.read())

    (referrer,) = json.loads(get(f"referrers/{digest}", "application/vnd.oci.image.index.v1+json"))[
        "manifests"
    ]
    (layer,) = json.loads(get(f"manifests/{referrer['digest']}"))["layers"]
    return get(f"blobs/{layer['digest']}")


@pytest.fixture(scope="module")
def keyless(
    registry: peers.Registry,
    referrers_registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Keyless]:
    workdir = tmp_path_factory.mktemp("keyless")
    with localsigstore.local_sigstore(workdir) as sigstore:
        signer = sigstore.issue(SUBJECT, label="ci")
        images, bundles_ = {}, {}
        for kind, running in (("fallback", registry), ("referrers", referrers_registry)):
            for rekor in (1, 2):
                repository = f"keyless/rekor{rekor}"
                digest = peers.push_image(running, repository, "v1", workdir=workdir)
                ref = f"{running.host}/{repository}@{digest}"
                localsigstore.sign_image(sigstore, signer, ref, rekor=rekor)
                images[f"{kind}-rekor{rekor}"] = running.ref(repository, "v1")
                if running.referrers_api:
                    bundles_[rekor] = (_bundle(running, repository, digest), digest)
        root = workdir / "trusted_root.json"
        root.write_text(sigstore.trusted_root_json())
        yield Keyless(sigstore=sigstore, root=root, images=images, bundles=bundles_)


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


KINDS = ["fallback-rekor1", "fallback-rekor2", "referrers-rekor1", "referrers-rekor2"]


@pytest.mark.parametrize("kind", KINDS)
def test_keyless_image_verifies_with_the_right_identity(
    keyless: Keyless, kind: str, tmp_path: Path
) -> None:
    code, out = _verify(keyless, keyless.images[kind], GOOD, tmp_path)
    report = json.loads(out)
    assert code == 0, out
    assert report["verified"] is True
    assert report["policies"][0]["signers"] == ["ci"]


@pytest.mark.parametrize("kind", KINDS)
def test_cosign_verify_agrees_with_the_same_root(keyless: Keyless, kind: str) -> None:
    """The local Sigstore is one the real cosign trusts: not a world only Muster accepts."""

    def cosign_verify(subject: str) -> int:
        return peers.run_tool(
            "cosign", "verify", f"--trusted-root={keyless.root}",
            f"--certificate-identity={subject}",
            f"--certificate-oidc-issuer={localsigstore.GITHUB_ISSUER}",
            "--allow-http-registry", keyless.images[kind], check=False,
        ).returncode  # fmt: skip

    assert cosign_verify(SUBJECT) == 0
    assert cosign_verify("release@acme.example") != 0


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
    code, out = _verify(keyless, keyless.images["referrers-rekor2"], identity, tmp_path)
    report = json.loads(out)
    assert code == 1, out
    assert report["verified"] is False
    message = json.dumps(report)
    assert FOUND in message, message
    assert expected in message, message


@pytest.mark.parametrize(
    ("replaced", "reason"),
    [
        ("certificateAuthorities", "does not chain to a trusted CA"),
        (None, "which the trusted root does not list"),  # another Sigstore altogether
    ],
    ids=["another-fulcio", "another-sigstore"],
)
def test_a_root_that_does_not_name_the_signers_refuses(
    keyless: Keyless, replaced: str | None, reason: str, tmp_path: Path
) -> None:
    other = localsigstore.LocalSigstore(tmp_path, name="other").trusted_root()
    document = keyless.sigstore.trusted_root()
    if replaced is None:
        document = other
    else:
        document[replaced] = other[replaced]
    root = tmp_path / "other-root.json"
    root.write_text(json.dumps(document))
    image = keyless.images["referrers-rekor1"]
    code, out = _verify(dataclasses.replace(keyless, root=root), image, GOOD, tmp_path)
    assert code == 1, out
    assert reason in out, out


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
                "spec": {
                    "containers": [{"name": "main", "image": keyless.images["fallback-rekor1"]}]
                },
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
    host = keyless.images["fallback-rekor1"].split("/", 1)[0]
    code, out, err = muster_check(
        "--format", "json", "--insecure-registry", host, "--policy", str(policies), str(pod)
    )
    (result,) = json.loads(out)["results"]
    assert result["allowed"] is allowed, out
    if allowed:
        assert code == common.EXIT_OK, err
        assert result["patch"][0]["value"].startswith(
            keyless.images["fallback-rekor1"] + "@sha256:"
        )
    else:
        assert code == common.EXIT_FAIL, err
        (denial,) = result["denials"]
        assert denial["check"] == "image-signature"
        assert FOUND in denial["message"]
        assert (
            f"expected {identity['subject']} (issuer {identity['issuer']})" in (denial["message"])
        )


def _judge(root: dict[str, Any], bundle: dict[str, Any], digest: str) -> proofs.Proof:
    identity = authorities.Identity(issuer=localsigstore.GITHUB_ISSUER, subject=SUBJECT)
    authority = authorities.KeylessAuthority(
        name="ci", identities=(identity,), trusted_root=trust.load_trusted_root(json.dumps(root))
    )
    return bundles.verify_image(json.dumps(bundle).encode(), digest=digest, authority=authority)


def _without(root: dict[str, Any], member: str, keep: slice = slice(0, 0)) -> dict[str, Any]:
    changed = copy.deepcopy(root)
    changed[member] = changed[member][keep]
    return changed


def _tamper_checkpoint(bundle: dict[str, Any]) -> None:
    proof = bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    lines = proof["checkpoint"]["envelope"].split("\n")
    lines[1] = str(int(lines[1]) + 1)  # the tree size the log signed
    proof["checkpoint"]["envelope"] = "\n".join(lines)


def _drop_a_proof_hash(bundle: dict[str, Any]) -> None:
    proof = bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    proof["hashes"] = proof["hashes"][1:]


def _drop_timestamps(bundle: dict[str, Any]) -> None:
    bundle["verificationMaterial"].pop("timestampVerificationData")


def _drop_log_entries(bundle: dict[str, Any]) -> None:
    bundle["verificationMaterial"]["tlogEntries"] = []


@pytest.mark.parametrize("rekor", [1, 2])
def test_both_log_versions_verify_and_say_what_the_log_proved(keyless: Keyless, rekor: int) -> None:
    raw, digest = keyless.bundles[rekor]
    bundle = json.loads(raw)
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    expected = {1: ("dsse", "0.0.1"), 2: ("hashedrekord", "0.0.2")}[rekor]
    assert (entry["kindVersion"]["kind"], entry["kindVersion"]["version"]) == expected
    assert ("timestampVerificationData" in bundle["verificationMaterial"]) == (rekor == 2)
    proof = _judge(keyless.sigstore.trusted_root(), bundle, digest)
    assert proof.identity == proofs.CertificateIdentity(
        issuer=localsigstore.GITHUB_ISSUER, subjects=(SUBJECT,)
    )
    assert proof.sct_checked
    assert proof.log_index == int(entry["logIndex"])
    # Rekor v1 signs the time it integrated the entry; Rekor v2 leaves time to the TSA.
    assert (proof.integrated_time is not None) == (rekor == 1)


@pytest.mark.parametrize(
    ("rekor", "change_root", "change_bundle", "reason"),
    [
        (2, ("timestampAuthorities", slice(0, 0)), None, "the trusted root lists no TSA"),
        (1, ("tlogs", slice(1, 2)), None, "which the trusted root does not list"),
        (2, ("tlogs", slice(0, 1)), None, "which the trusted root does not list"),
        (1, ("ctlogs", slice(0, 0)), None, "CTFE keys not found in trusted root"),
        (1, None, _tamper_checkpoint, "checkpoint: invalid signature"),
        (2, None, _tamper_checkpoint, "checkpoint: invalid signature"),
        (2, None, _drop_a_proof_hash, "inclusion proof has wrong size"),
        (2, None, _drop_timestamps, "must contain an inclusion promise or signed timestamp"),
        (1, None, _drop_log_entries, "expected exactly one log entry"),
    ],
    ids=[
        "rekor2-root-without-tsa",
        "rekor1-root-without-its-log",
        "rekor2-root-without-its-log",
        "root-without-ct-log",
        "rekor1-checkpoint-tampered",
        "rekor2-checkpoint-tampered",
        "rekor2-inclusion-proof-cut",
        "rekor2-without-timestamp",
        "no-log-entry",
    ],
)
def test_log_entries_and_times_are_checked_and_refusals_say_why(
    keyless: Keyless,
    rekor: int,
    change_root: tuple[str, slice] | None,
    change_bundle: Any,
    reason: str,
) -> None:
    raw, digest = keyless.bundles[rekor]
    bundle = json.loads(raw)
    root = keyless.sigstore.trusted_root()
    if change_root is not None:
        root = _without(root, *change_root)
    if change_bundle is not None:
        change_bundle(bundle)
    with pytest.raises(proofs.Rejected) as refused:
        _judge(root, bundle, digest)
    assert reason in str(refused.value)


def test_a_timestamp_from_an_untrusted_authority_gives_no_signing_time(
    keyless: Keyless, tmp_path: Path
) -> None:
    raw, digest = keyless.bundles[2]
    root = keyless.sigstore.trusted_root()
    root["timestampAuthorities"] = localsigstore.LocalSigstore(
        tmp_path, name="other"
    ).trusted_root()["timestampAuthorities"]
    with pytest.raises(proofs.Rejected) as refused:
        _judge(root, json.loads(raw), digest)
    assert "no verified signing time" in str(refused.value)


@pytest.mark.parametrize("rekor", [1, 2])
def test_the_first_entry_of_a_fresh_log_verifies(
    referrers_registry: peers.Registry, rekor: int, tmp_path: Path
) -> None:
    """Index 0 and a one-leaf proof: cosign's protojson leaves out logIndex and hashes."""
    with localsigstore.local_sigstore(tmp_path, earlier=0) as sigstore:
        signer = sigstore.issue(SUBJECT, label="ci")
        repository = f"keyless/fresh-rekor{rekor}"
        digest = peers.push_image(referrers_registry, repository, "v1", workdir=tmp_path)
        ref = f"{referrers_registry.host}/{repository}@{digest}"
        localsigstore.sign_image(sigstore, signer, ref, rekor=rekor)
        bundle = json.loads(_bundle(referrers_registry, repository, digest))
        entry = bundle["verificationMaterial"]["tlogEntries"][0]
        assert "logIndex" not in entry and "hashes" not in entry["inclusionProof"]
        proof = _judge(sigstore.trusted_root(), bundle, digest)
        assert proof.log_index == 0
        root = tmp_path / "trusted_root.json"
        root.write_text(sigstore.trusted_root_json())
        verified = peers.run_tool(
            "cosign", "verify", f"--trusted-root={root}", f"--certificate-identity={SUBJECT}",
            f"--certificate-oidc-issuer={localsigstore.GITHUB_ISSUER}", "--allow-http-registry",
            ref, check=False,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr
