"""Attestations made by the real cosign v2 (``.att``) and v3 (bundles) on the real registries
(with and without the OCI referrers API), judged by the image verifier and ``muster image
verify``: conditions passing and failing, subject mismatch, wrong signer, predicate type absent,
multi-arch indexes, round trips and caching."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from muster.kernel import references
from muster.platform import registries
from muster.signatures.rules import attestations, conditions, cosign, proofs
from tests import attesting, checkcli, localsigstore, paths, peers
from tests.commandline import muster
from tests.integration.images.conftest import Signer, client_for, sign_v3

pytestmark = pytest.mark.integration

REGISTRIES = ["registry", "referrers_registry"]
BUILDER_CONDITION = {
    "name": "org-ci",
    "expression": f'predicate.runDetails.builder.id == "{attesting.BUILDER}"',
}
SBOM_CONDITION = {
    "name": "deny-list",
    "expression": '!predicate.components.exists(c, c.name in ["log4j-core", "xz-utils"])',
}


def spec(host: str, signer: Signer, attester: Signer, *required: dict[str, Any]) -> dict[str, Any]:
    return {
        "images": [f"{host}/**"],
        "authorities": [{"name": signer.name, "key": {"data": signer.pem}}],
        "attestations": [
            {"authorities": [{"name": f"ci-{attester.name}", "key": {"data": attester.pem}}]}
            | attestation
            for attestation in required
        ],
    }


def compiled(spec_: dict[str, Any]) -> imagepolicies.CompiledPolicy:
    return imagepolicies.compile_policy("attested", 1, imagepolicies.parse_spec(spec_), {})


def provenance(*required: dict[str, Any]) -> dict[str, Any]:
    return {"name": "provenance", "predicateType": "slsaprovenance1", "conditions": list(required)}


def sbom(*required: dict[str, Any]) -> dict[str, Any]:
    return {"name": "sbom", "predicateType": "cyclonedx", "conditions": list(required)}


async def decide(
    host: str, ref: str, policy: imagepolicies.CompiledPolicy
) -> imagepolicies.Decision:
    async with client_for(host) as client:
        verifier = imageverifier.Verifier(client)
        ((_, decision),) = (await verifier.verify(references.parse(ref), [policy])).decisions
        return decision


def image(registry: peers.Registry, name: str, workdir: Path) -> str:
    digest = peers.push_image(
        registry, f"att/{name}", "v1", files={"f": f"{name}\n".encode()}, workdir=workdir
    )
    return f"{registry.host}/att/{name}@{digest}"


def attest(version: int, signer: Signer, ref: str, kind: str, predicate: Any, work: Path) -> None:
    (attesting.attest_v2 if version == 2 else attesting.attest_v3)(
        signer.private, ref, kind, predicate, work
    )


@pytest.mark.parametrize("version", [2, 3], ids=["cosign-v2-att", "cosign-v3-bundle"])
@pytest.mark.parametrize("which", REGISTRIES)
async def test_attested_image_passes_and_conditions_decide(
    which: str,
    version: int,
    request: pytest.FixtureRequest,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    registry: peers.Registry = request.getfixturevalue(which)
    alice = signers["alice"]
    ref = image(registry, f"ok-{which}-{version}", tmp_path)
    sign_v3(alice, ref)
    attest(version, alice, ref, "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    attest(version, alice, ref, "cyclonedx", attesting.cyclonedx(), tmp_path)
    host = registry.host

    passed = await decide(
        host,
        ref,
        compiled(spec(host, alice, alice, provenance(BUILDER_CONDITION), sbom(SBOM_CONDITION))),
    )
    assert passed.passed, passed.message
    assert "attested: provenance by ECDSA P-256 key" in passed.message
    assert "sbom by ECDSA P-256 key" in passed.message

    other_ci = {
        "name": "org-ci",
        "expression": 'predicate.runDetails.builder.id.startsWith("https://ci.acme.internal/")',
    }
    failed = await decide(host, ref, compiled(spec(host, alice, alice, provenance(other_ci))))
    assert failed.reason == conditions.CONDITION_FAILED
    assert "attestation 'provenance' (https://slsa.dev/provenance/v1)" in failed.message
    assert f'predicate.runDetails.builder.id = "{attesting.BUILDER}"' in failed.message

    denied_package = sbom({"expression": '!predicate.components.exists(c, c.name == "urllib3")'})
    refused = await decide(host, ref, compiled(spec(host, alice, alice, denied_package)))
    assert refused.reason == conditions.CONDITION_FAILED

    # Attested by alice; the policy trusts only bob for provenance.
    wrong = await decide(host, ref, compiled(spec(host, alice, signers["bob"], provenance())))
    assert wrong.reason == conditions.MISSING
    assert "does not verify" in wrong.message

    absent = {"name": "vex", "predicateType": "openvex"}
    missing = await decide(host, ref, compiled(spec(host, alice, alice, absent)))
    assert missing.reason == conditions.MISSING
    assert "https://openvex.dev/ns" in missing.message


@pytest.mark.parametrize("which", REGISTRIES)
async def test_an_attestation_moved_onto_another_image_proves_nothing(
    which: str, request: pytest.FixtureRequest, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """Another image's ``.att`` manifest tagged as this image's: its statement is about the
    other digest, so it is refused though its signature is good."""
    registry: peers.Registry = request.getfixturevalue(which)
    alice = signers["alice"]
    mine = image(registry, f"mine-{which}", tmp_path)
    theirs = image(registry, f"theirs-{which}", tmp_path)
    sign_v3(alice, mine)
    attest(2, alice, theirs, "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    their_digest = theirs.rsplit("@", 1)[1]
    my_digest = mine.rsplit("@", 1)[1]
    repository = mine.rsplit("@", 1)[0]
    peers.run_tool(
        "crane",
        "copy",
        "--insecure",
        f"{theirs.rsplit('@', 1)[0]}:{their_digest.replace(':', '-')}.att",
        f"{repository}:{my_digest.replace(':', '-')}.att",
    )
    decision = await decide(
        registry.host, mine, compiled(spec(registry.host, alice, alice, provenance()))
    )
    assert decision.reason == conditions.MISSING
    assert f"statement is about sha256:{their_digest[7:]}" in decision.message
    assert f"not the image {my_digest}" in decision.message


async def test_multi_arch_index_needs_the_attestation_on_the_index_or_every_platform(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    alice = signers["alice"]
    host = registry.host
    amd = peers.push_image(registry, "att/multi", "amd", files={"a": b"amd\n"}, workdir=tmp_path)
    arm = peers.push_image(registry, "att/multi", "arm", files={"a": b"arm\n"}, workdir=tmp_path)
    index_ref = f"{host}/att/multi:index"
    peers.run_tool(
        "crane",
        "index",
        "append",
        "--insecure",
        f"--manifest={host}/att/multi@{amd}",
        f"--manifest={host}/att/multi@{arm}",
        f"--tag={index_ref}",
    )
    index = peers.run_tool("crane", "digest", "--insecure", index_ref).stdout.strip()
    for platform in (amd, arm):
        sign_v3(alice, f"{host}/att/multi@{platform}")
    policy = compiled(spec(host, alice, alice, provenance(BUILDER_CONDITION)))
    # Every platform signed, one attested: the other may be the one the node pulls.
    attest(3, alice, f"{host}/att/multi@{amd}", "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    partly = await decide(host, index_ref, policy)
    assert partly.reason == conditions.MISSING
    assert f"platform #2 ({arm})" in partly.message
    attest(2, alice, f"{host}/att/multi@{arm}", "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    assert (await decide(host, index_ref, policy)).passed
    # Signed and attested on the index itself: that counts on its own.
    sign_v3(alice, f"{host}/att/multi@{index}")
    on_index = compiled(spec(host, alice, alice, sbom(SBOM_CONDITION)))
    assert (await decide(host, index_ref, on_index)).reason == conditions.MISSING
    attest(3, alice, f"{host}/att/multi@{index}", "cyclonedx", attesting.cyclonedx(), tmp_path)
    assert (await decide(host, index_ref, on_index)).passed


async def test_round_trips_cold_and_warm(
    referrers_registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """One attestation adds requests but no round trip in sequence; warm, nothing at all."""
    registry = referrers_registry
    alice = signers["alice"]
    ref = image(registry, "trips", tmp_path)
    sign_v3(alice, ref)
    attest(3, alice, ref, "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    host = registry.host
    plain = imagepolicies.compile_policy(
        "plain",
        1,
        imagepolicies.parse_spec(
            {"images": [f"{host}/**"], "authorities": [{"key": {"data": alice.pem}}]}
        ),
        {},
    )
    attested = compiled(spec(host, alice, alice, provenance(BUILDER_CONDITION)))
    costs = {}
    for policy in (plain, attested):
        async with client_for(host) as client:
            await client.referrers(host, "att/trips", "sha256:" + "0" * 64)  # learn the API
            trips = registries.RoundTrips()
            client.observer = trips
            verifier = imageverifier.Verifier(client)
            result = await verifier.verify(references.parse(ref), [policy])
            assert result.passed
            costs[policy.name] = (trips.requests, trips.depth)
            before = client.stats.requests
            assert (await verifier.verify(references.parse(ref), [policy])).passed
            assert client.stats.requests == before  # warm: from the decision cache
    print(f"\nrequests/depth: signature only {costs['plain']}, +attestation {costs['attested']}")
    # The signature stage reads every bundle referrer (its attestation bundle too): five
    # requests, three in sequence. The attestation adds the referrers list again, the .att tag,
    # and the bundle's manifest and blob, read beside the signatures: four requests and no
    # further stage (the .sig lookup would be a tenth). Its three round trips run in parallel
    # with the signatures' three; the depth measured across two parallel lookups is only an
    # upper bound (a request of one may start after a request of the other ended).
    assert costs["plain"] == (5, 3)
    assert costs["attested"][0] == 9
    assert 3 <= costs["attested"][1] <= 5


def write_policy(path: Path, spec_: dict[str, Any]) -> Path:
    document = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": "attested"},
        "spec": spec_,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_muster_image_verify_reports_attestations(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    alice = signers["alice"]
    ref = image(registry, "cli", tmp_path)
    sign_v3(alice, ref)
    attest(2, alice, ref, "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    host = registry.host
    good = write_policy(
        tmp_path / "good.yaml", spec(host, alice, alice, provenance(BUILDER_CONDITION))
    )
    code, out, err = muster(
        "image", "verify", ref, f"--policy={good}", f"--insecure-registry={host}", "--format=json"
    )
    assert code == 0, out + err
    assert "attested: provenance" in json.loads(out)["policies"][0]["message"]
    stale = provenance(
        {
            "name": "fresh",
            "expression": "timestamp(predicate.runDetails.metadata.startedOn)"
            ' > now - duration("1h")',
        }
    )
    bad = write_policy(tmp_path / "bad.yaml", spec(host, alice, alice, stale))
    code, out, err = muster(
        "image", "verify", ref, f"--policy={bad}", f"--insecure-registry={host}"
    )
    assert code == 1, out + err
    assert "condition 'fresh' is false" in out
    assert 'predicate.runDetails.metadata.startedOn = "2026-12-01T10:00:00Z"' in out


def test_the_benchmark_prints_the_extra_cost_of_one_attestation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``benchmarks/attestation_check.py`` (docs/performance.md), with one run per case."""
    import sys

    sys.path.insert(0, str(paths.REPO / "benchmarks"))
    try:
        import attestation_check
    finally:
        sys.path.remove(str(paths.REPO / "benchmarks"))
    assert attestation_check.main(["--runs", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in printed if line.startswith(("docker-registry", "ggcr"))]
    assert [row[:3] for row in rows] == [
        ["docker-registry", "cosign", "v2"],
        ["docker-registry", "cosign", "v3"],
        ["ggcr+referrers", "cosign", "v2"],
        ["ggcr+referrers", "cosign", "v3"],
    ]
    for line in printed:
        if not line.startswith(("docker-registry", "ggcr")):
            continue
        # ... requests alone -> attested, round trips alone -> attested
        found = re.search(r"(\d+) ->\s*(\d+)\s+(\d+) ->\s*(\d+)$", line)
        assert found is not None, line
        requests_alone, requests_attested, trips_alone, trips_attested = map(int, found.groups())
        assert requests_attested > requests_alone, line
        assert trips_alone >= 3 and trips_attested >= 3, line
    cpu = {line[:28].strip(): float(line[28:]) for line in printed[-3:]}
    assert set(cpu) == {"signature only", "+ provenance (cosign v2)", "+ provenance (cosign v3)"}
    assert all(value > 0 for value in cpu.values())


@pytest.mark.parametrize("rekor", [1, 2])
async def test_keyless_cosign_v3_attestations_verify_by_identity(
    rekor: int,
    referrers_registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    """A keyless attestation (a Fulcio-shaped certificate from a local Sigstore, its DSSE entry
    in the local Rekor v1 or v2) counts for an identity whose trusted root names that Sigstore;
    another subject does not."""
    registry = referrers_registry
    alice = signers["alice"]
    ref = image(registry, f"keyless-rekor{rekor}", tmp_path)
    sign_v3(alice, ref)
    with localsigstore.local_sigstore(tmp_path) as sigstore:
        ci = sigstore.issue("ci@acme.example", label="ci")
        attesting.attest_keyless(
            sigstore, ci, ref, "slsaprovenance1", attesting.slsa_v1(), tmp_path, rekor=rekor
        )
        root = sigstore.trusted_root_json().encode()
    source = imagepolicies.Source("ConfigMap", "sigstore", "trusted-root", "trusted_root.json")

    def keyless(subject: str) -> imagepolicies.CompiledPolicy:
        identity = {"issuer": localsigstore.GITHUB_ISSUER, "subject": subject}
        trusted = {"namespace": "sigstore", "name": "trusted-root"}
        spec_ = {
            "images": [f"{registry.host}/**"],
            "authorities": [{"name": "alice", "key": {"data": alice.pem}}],
            "attestations": [
                {
                    "name": "provenance",
                    "predicateType": "slsaprovenance1",
                    "authorities": [
                        {
                            "name": "ci",
                            "keyless": {"identities": [identity], "trustedRoot": trusted},
                        }
                    ],
                    "conditions": [BUILDER_CONDITION],
                }
            ],
        }
        parsed = imagepolicies.parse_spec(spec_)
        return imagepolicies.compile_policy("keyless", 1, parsed, {source: root})

    passed = await decide(registry.host, ref, keyless("ci@acme.example"))
    assert passed.passed, passed.message
    assert "attested: provenance by ci@acme.example" in passed.message
    other = await decide(registry.host, ref, keyless("release@acme.example"))
    assert other.reason == conditions.MISSING
    assert "signed by ci@acme.example" in other.message
    assert "expected release@acme.example" in other.message


def _pod(name: str, image_: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"containers": [{"name": "main", "image": image_}]},
    }


def test_muster_check_admits_the_attested_pod_and_denies_the_other(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    alice, bob = signers["alice"], signers["bob"]
    attested = image(registry, "check-attested", tmp_path)
    unattested = image(registry, "check-unattested", tmp_path)
    for ref in (attested, unattested):
        sign_v3(alice, ref)
    attest(3, bob, attested, "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    host = registry.host
    policy = write_policy(
        tmp_path / "p.yaml", spec(host, alice, bob, provenance(BUILDER_CONDITION))
    )
    pods = tmp_path / "pods.yaml"
    pods.write_text(
        yaml.safe_dump_all([_pod("attested", attested), _pod("unattested", unattested)])
    )
    code, out, err = checkcli.muster_check(
        "--format", "json", "--insecure-registry", host, "--policy", str(policy), str(pods)
    )
    assert code == 1, out + err
    admitted, denied = json.loads(out)["results"]
    assert admitted["allowed"] is True
    assert denied["allowed"] is False
    (denial,) = denied["denials"]
    assert denial["policy"] == {"kind": "ImagePolicy", "name": "attested"}
    assert "attestation 'provenance' (https://slsa.dev/provenance/v1)" in denial["message"]
    assert "the image carries no attestation" in denial["message"]


@pytest.mark.parametrize("which", REGISTRIES)
async def test_cosign_v2_attestations_with_a_log_entry_keyless_and_by_key(
    which: str, request: pytest.FixtureRequest, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """cosign v2 ``attest`` logging its DSSE entry in a local Rekor: keyless with a
    Fulcio-shaped certificate (the identity and the SET decide), and by key where the authority
    requires a log entry; a wrong identity or a root that does not trust that Rekor refuses."""
    registry: peers.Registry = request.getfixturevalue(which)
    alice = signers["alice"]
    keyless_ref = image(registry, f"v2-keyless-{which}", tmp_path)
    keyed_ref = image(registry, f"v2-logged-{which}", tmp_path)
    for ref in (keyless_ref, keyed_ref):
        sign_v3(alice, ref)
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
    with (
        localsigstore.local_sigstore(tmp_path / "one") as sigstore,
        localsigstore.local_sigstore(tmp_path / "two", name="other") as other,
    ):
        ci = sigstore.issue("ci@acme.example", label="ci")
        provenance_ = attesting.slsa_v1()
        attesting.attest_v2_logged(
            sigstore, keyless_ref, "slsaprovenance1", provenance_, tmp_path, signer=ci
        )
        attesting.attest_v2_logged(
            sigstore, keyed_ref, "slsaprovenance1", provenance_, tmp_path, key=alice.private
        )
        roots = {"one": sigstore.trusted_root_json(), "two": other.trusted_root_json()}
    source = imagepolicies.Source("ConfigMap", "sigstore", "trusted-root", "trusted_root.json")
    trusted = {"namespace": "sigstore", "name": "trusted-root"}

    def policy(authority: dict[str, Any], root: str) -> imagepolicies.CompiledPolicy:
        spec_ = spec(registry.host, alice, alice, provenance(BUILDER_CONDITION))
        spec_["attestations"][0]["authorities"] = [{"name": "ci"} | authority]
        parsed = imagepolicies.parse_spec(spec_)
        return imagepolicies.compile_policy("logged", 1, parsed, {source: roots[root].encode()})

    def keyless(subject: str) -> dict[str, Any]:
        identity = {"issuer": localsigstore.GITHUB_ISSUER, "subject": subject}
        return {"keyless": {"identities": [identity], "trustedRoot": trusted}}

    host = registry.host
    passed = await decide(host, keyless_ref, policy(keyless("ci@acme.example"), "one"))
    assert passed.passed, passed.message
    assert "attested: provenance by ci@acme.example" in passed.message
    wrong = await decide(host, keyless_ref, policy(keyless("release@acme.example"), "one"))
    assert wrong.reason == conditions.MISSING
    assert "expected release@acme.example" in wrong.message
    untrusted = await decide(host, keyless_ref, policy(keyless("ci@acme.example"), "two"))
    assert untrusted.reason == conditions.MISSING
    assert "not trusted" in untrusted.message

    logged_key = {"key": {"data": alice.pem, "trustedRoot": trusted}}
    assert (await decide(host, keyed_ref, policy(logged_key, "one"))).passed
    # The keyless image's layer was not signed by alice's key; the keyed one has its log entry.
    refused = await decide(host, keyless_ref, policy(logged_key, "one"))
    assert refused.reason == conditions.MISSING
    assert "DSSE signature does not verify" in refused.message
    # A key authority that requires a log entry refuses the v2 attestation made without one.
    unlogged_ref = image(registry, f"v2-unlogged-{which}", tmp_path)
    sign_v3(alice, unlogged_ref)
    attest(2, alice, unlogged_ref, "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    unlogged = await decide(host, unlogged_ref, policy(logged_key, "one"))
    assert unlogged.reason == conditions.MISSING
    assert "no Rekor bundle" in unlogged.message

    # The keyless layer's Rekor bundle moved onto the keyed layer: the SET is genuine, but the
    # entry it signs records another payload, signature and signer.
    (keyed,) = _att_layers(registry, keyed_ref)
    (certified,) = _att_layers(registry, keyless_ref)
    moved = attestations.LegacyAttestation(
        0,
        keyed.envelope,
        {
            **keyed.annotations,
            cosign.BUNDLE_ANNOTATION: certified.annotations[cosign.BUNDLE_ANNOTATION],
        },
    )
    compiled_key = policy(logged_key, "one").attestations[0].authorities[0]
    with pytest.raises(proofs.Rejected, match="Rekor entry records a different DSSE payload"):
        attestations.verify(moved, digest=keyed_ref.rsplit("@", 1)[1], authority=compiled_key)
    assert attestations.verify(keyed, digest=keyed_ref.rsplit("@", 1)[1], authority=compiled_key)


def _att_layers(registry: peers.Registry, ref: str) -> list[attestations.LegacyAttestation]:
    """The ``.att`` layers of ``ref`` as the registry holds them."""
    repository, digest = ref.split("/", 1)[1].rsplit("@", 1)
    base = f"http://{registry.host}/v2/{repository}"
    tag = digest.replace(":", "-") + ".att"
    request = urllib.request.Request(
        f"{base}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback registry
        manifest = json.loads(response.read())
    layers = []
    for index, layer in enumerate(manifest["layers"]):
        with urllib.request.urlopen(f"{base}/blobs/{layer['digest']}", timeout=10) as response:
            layers.append(
                attestations.LegacyAttestation(index, response.read(), layer["annotations"])
            )
    return layers
