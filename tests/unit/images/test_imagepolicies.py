"""ImagePolicy specs: validation, matching, compilation and the decision from registry evidence."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from muster.app import catalog
from muster.images.rules import policies as imagepolicies
from muster.kernel import pullsecrets, references
from muster.signatures.rules import authorities, bundles, cosign, formats, trust
from tests.paths import fixture
from tests.unit.signatures.conftest import (
    ALICE_DIGEST,
    KEYLESS_DIGEST,
    Capture,
    signature_manifest,
)

pytestmark = pytest.mark.unit

ALICE = (fixture("sigstore", "connaisseur", "alice.key")).read_text()
BOB = (fixture("sigstore", "connaisseur", "bob.key")).read_text()
CHARLIE = (fixture("sigstore", "connaisseur", "charlie.key")).read_text()
ROOT_SOURCE = imagepolicies.Source("ConfigMap", "sigstore", "root", "trusted_root.json")
PGI_ROOT = fixture("sigstore", "cosign", "trusted_root_pgi.json").read_bytes()
TESTIMAGE = references.parse("docker.io/securesystemsengineering/testimage:multi-cosigned-alice")


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "images": ["docker.io/securesystemsengineering/**"],
        "authorities": [{"name": "alice", "key": {"data": ALICE}}],
    }
    return {**base, **overrides}


def compiled(data: dict[str, Any], materials: dict[imagepolicies.Source, bytes] | None = None):  # type: ignore[no-untyped-def]
    return imagepolicies.compile_policy("p", 3, imagepolicies.parse_spec(data), materials or {})


def legacy(capture: Capture) -> cosign.LegacySignature:
    return cosign.LegacySignature(
        manifest=json.dumps(capture.manifest).encode(), blobs=capture.blobs
    )


def legacy_found(*signatures: cosign.LegacySignature) -> tuple[formats.Found, ...]:
    """Evidence as the registry's legacy ``.sig`` lookup hands it to the judge."""
    return (formats.Found(cosign.FORMAT, signatures),)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"authorities": [{"key": {"data": ALICE}}]}, "images: Field required"),
        (spec(images=[]), "images: Tuple should have at least 1 item"),
        (spec(authorities=[]), "authorities: Tuple should have at least 1 item"),
        (spec(authorities=[{"key": {}}]), "exactly one of data and secretRef"),
        (
            spec(authorities=[{"key": {"data": ALICE}, "keyless": {}}]),
            "identities: Field required",
        ),
        (spec(authorities=[{"name": "x"}]), "exactly one of key, keyless, notation and static"),
        (spec(authorities=[{"static": {"action": "maybe"}}]), "action: Input should be"),
        (
            spec(authorities=[{"static": {"action": "pass"}, "key": {"data": ALICE}}]),
            "exactly one of key, keyless, notation and static",
        ),
        (
            spec(authorities=[{"static": {"action": "pass"}}, {"key": {"data": ALICE}}]),
            "a static authority must be the policy's only authority",
        ),
        (spec(mode="audit"), "mode: Input should be 'enforce' or 'warn'"),
        (spec(threshold=2), "threshold 2 is more than the 1 authorities"),
        (spec(threshold=0), "threshold: Input should be greater than or equal to 1"),
        (spec(bogus=True), "bogus: Extra inputs are not permitted"),
        (
            spec(
                authorities=[
                    {"name": "a", "key": {"data": ALICE}},
                    {"name": "a", "key": {"data": BOB}},
                ]
            ),
            "authority names must be unique",
        ),
        (
            spec(
                authorities=[
                    {
                        "keyless": {
                            "identities": [{"issuer": "https://x", "subjectRegExp": "("}],
                            "trustedRoot": {"namespace": "s", "name": "r"},
                        }
                    }
                ]
            ),
            "subject regexp '(' is invalid",
        ),
        (
            spec(
                authorities=[
                    {
                        "keyless": {
                            "identities": [{"issuer": "https://x"}],
                            "trustedRoot": {"namespace": "s", "name": "r"},
                        }
                    }
                ]
            ),
            "exactly one of subject and subjectRegExp",
        ),
        (
            spec(namespaceSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
            "needs values",
        ),
        (spec(images=["ghcr.io/a b"]), "not a valid glob"),
        ("not a mapping", "spec must be an object"),
    ],
)
def test_invalid_specs_name_the_field(data: Any, error: str) -> None:
    with pytest.raises(
        imagepolicies.InvalidImagePolicy, match=error.replace("(", r"\(").replace("'", ".")
    ):
        imagepolicies.parse_spec(data)


def test_defaults_and_camel_case() -> None:
    parsed = imagepolicies.parse_spec(spec())
    assert parsed.mode == "enforce"
    assert parsed.pin_digests is True
    assert compiled(spec()).threshold == 1


# --- matching -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "image", "matches"),
    [
        ("ghcr.io/acme/*", "ghcr.io/acme/trainer:v1", True),
        ("ghcr.io/acme/*", "ghcr.io/acme/team/trainer:v1", False),
        ("ghcr.io/acme/**", "ghcr.io/acme/team/trainer@sha256:" + "a" * 64, True),
        ("ghcr.io/acme/**", "ghcr.io/acmeevil/trainer", False),
        ("docker.io/library/*", "nginx", True),
        ("127.0.0.1:5000/t?am/app", "127.0.0.1:5000/team/app", True),
        ("ghcr.io/acme/trainer", "ghcr.io/acme/trainer-evil", False),
        # Patterns and references are normalised alike: one registry, one name.
        ("GHCR.io:443/acme/*", "ghcr.io./acme/trainer", True),
        ("ghcr.io/acme/*", "Ghcr.IO:443/acme/trainer", True),
        ("index.docker.io/library/*", "registry-1.docker.io/nginx", True),
        ("nginx", "docker.io/library/nginx@sha256:" + "a" * 64, True),
        ("team/*", "index.docker.io/team/app", True),
        ("ghcr.io/acme/*", "ghcr.io:8443/acme/trainer", False),
        # The same registry under another name is another name: not covered.
        ("127.0.0.1:5000/**", "localhost:5000/app", False),
    ],
)
def test_globs(pattern: str, image: str, matches: bool) -> None:
    policy = compiled(spec(images=[pattern]))
    assert policy.covers(references.parse(image)) is matches


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        (None, {}, True),
        ({}, {"a": "b"}, True),
        ({"matchLabels": {"team": "ml"}}, {"team": "ml", "x": "y"}, True),
        ({"matchLabels": {"team": "ml"}}, {"team": "web"}, False),
        (
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
            {"env": "prod"},
            True,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, {}, False),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]},
            {"env": "dev"},
            False,
        ),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "1"}, False),
    ],
)
def test_namespace_selector(selector: Any, labels: dict[str, str], selected: bool) -> None:
    data = spec() if selector is None else spec(namespaceSelector=selector)
    assert compiled(data).applies_to(labels) is selected


# --- compilation --------------------------------------------------------------------------------


def keyless_spec(**identity: str) -> dict[str, Any]:
    return spec(
        authorities=[
            {
                "name": "ci",
                "keyless": {
                    "identities": [identity or {"issuer": "https://x", "subject": "me"}],
                    "trustedRoot": {"namespace": "sigstore", "name": "root"},
                },
            }
        ]
    )


def test_sources_are_listed_once() -> None:
    data = imagepolicies.parse_spec(
        spec(
            authorities=[
                {"key": {"secretRef": {"namespace": "k", "name": "s", "key": "cosign.pub"}}},
                {
                    "key": {
                        "data": BOB,
                        "trustedRoot": {"namespace": "sigstore", "name": "root"},
                    }
                },
                *keyless_spec()["authorities"],
            ]
        )
    )
    assert imagepolicies.sources_of(data) == (
        imagepolicies.Source("Secret", "k", "s", "cosign.pub"),
        ROOT_SOURCE,
    )


def test_compile_resolves_secret_keys_and_roots() -> None:
    data = spec(
        authorities=[
            {"name": "a", "key": {"secretRef": {"namespace": "k", "name": "s", "key": "pub"}}},
            *keyless_spec()["authorities"],
        ]
    )
    policy = compiled(
        data,
        {imagepolicies.Source("Secret", "k", "s", "pub"): ALICE.encode(), ROOT_SOURCE: PGI_ROOT},
    )
    assert [a.name for a in policy.authorities] == ["a", "ci"]
    assert isinstance(policy.authorities[1], authorities.KeylessAuthority)
    assert policy.key == ("p", 3)


@pytest.mark.parametrize(
    ("data", "materials", "error"),
    [
        (
            spec(
                authorities=[{"key": {"secretRef": {"namespace": "k", "name": "s", "key": "pub"}}}]
            ),
            {},
            "authority authorities.0.: Secret k/s key 'pub' was not found",
        ),
        (spec(authorities=[{"key": {"data": "not a key"}}]), {}, "public key is invalid"),
        (keyless_spec(), {ROOT_SOURCE: b"{}"}, "trusted root is invalid"),
        (keyless_spec(), {}, "ConfigMap sigstore/root key 'trusted_root.json' was not found"),
    ],
)
def test_compile_errors_say_why(
    data: dict[str, Any], materials: dict[imagepolicies.Source, bytes], error: str
) -> None:
    with pytest.raises(imagepolicies.InvalidImagePolicy, match=error):
        compiled(data, materials)


def test_crd_is_generated_from_the_model() -> None:
    (crd,) = [c for c in catalog.definitions() if c["spec"]["names"]["kind"] == "ImagePolicy"]
    assert crd["spec"]["scope"] == "Cluster"
    version = crd["spec"]["versions"][0]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Mode", "Images", "Authorities", "Compiled"} <= columns
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec_schema["properties"]) == {
        "images",
        "namespaceSelector",
        "mode",
        "authorities",
        "threshold",
        "pinDigests",
        "vulnerabilities",
        "denial",
        "attestations",
    }
    authority = spec_schema["properties"]["authorities"]["items"]["properties"]
    assert authority["static"]["properties"]["action"]["enum"] == ["pass", "fail"]


# --- judging ------------------------------------------------------------------------------------


def test_alice_capture_passes_a_policy_trusting_alice() -> None:
    evidence = imagepolicies.Evidence(
        digest=ALICE_DIGEST,
        signatures=legacy_found(
            legacy(signature_manifest(ALICE_DIGEST)),
        ),
    )
    decision = imagepolicies.judge(compiled(spec()), evidence)
    assert decision.passed, decision.message
    assert decision.signers == ("alice",)


def test_untrusted_key_fails_with_the_reason() -> None:
    evidence = imagepolicies.Evidence(
        digest=ALICE_DIGEST,
        signatures=legacy_found(
            legacy(signature_manifest(ALICE_DIGEST)),
        ),
    )
    decision = imagepolicies.judge(
        compiled(spec(authorities=[{"name": "bob", "key": {"data": BOB}}])), evidence
    )
    assert not decision.passed
    assert decision.reason == "SignatureNotTrusted"
    assert decision.message.startswith("signed by 0 of 1 required authorities (bob: ")


def test_threshold_two_of_three() -> None:
    evidence = imagepolicies.Evidence(
        digest=ALICE_DIGEST,
        signatures=legacy_found(
            legacy(signature_manifest(ALICE_DIGEST)),
        ),
    )
    authorities = [
        {"name": "alice", "key": {"data": ALICE}},
        {"name": "bob", "key": {"data": BOB}},
        {"name": "charlie", "key": {"data": CHARLIE}},
    ]
    one = imagepolicies.judge(compiled(spec(authorities=authorities, threshold=1)), evidence)
    two = imagepolicies.judge(compiled(spec(authorities=authorities, threshold=2)), evidence)
    assert one.passed
    assert not two.passed
    assert "signed by 1 of 2 required authorities" in two.message


def test_signature_for_another_digest_does_not_count() -> None:
    capture = signature_manifest(ALICE_DIGEST)
    evidence = imagepolicies.Evidence(
        digest="sha256:" + "1" * 64,
        signatures=legacy_found(
            legacy(capture),
        ),
    )
    decision = imagepolicies.judge(compiled(spec()), evidence)
    assert not decision.passed
    assert "not the image digest" in decision.message


def test_no_signature_and_lookup_errors_are_failures() -> None:
    policy = compiled(spec())
    unsigned = imagepolicies.judge(policy, imagepolicies.Evidence(digest=ALICE_DIGEST))
    assert (unsigned.passed, unsigned.reason) == (False, "ImageNotSigned")
    broken = imagepolicies.judge(
        policy, imagepolicies.Evidence(digest=ALICE_DIGEST, error="registry error: HTTP 500")
    )
    assert (broken.passed, broken.reason) == (False, "SignatureLookupFailed")
    garbage = imagepolicies.judge(
        policy,
        imagepolicies.Evidence(
            digest=ALICE_DIGEST,
            signatures=legacy_found(
                cosign.LegacySignature(b"garbage", {}),
            ),
        ),
    )
    assert not garbage.passed
    assert "not valid JSON" in garbage.message or "JSON" in garbage.message


def test_malformed_bundle_is_a_failure_not_a_crash() -> None:
    evidence = imagepolicies.Evidence(
        digest=ALICE_DIGEST, signatures=(formats.Found(bundles.FORMAT, (b"{not json",)),)
    )
    decision = imagepolicies.judge(compiled(spec()), evidence)
    assert not decision.passed
    assert "bundle 1: bundle is invalid" in decision.message


def test_index_passes_when_every_platform_is_signed() -> None:
    signed = imagepolicies.Evidence(
        digest=ALICE_DIGEST,
        signatures=legacy_found(
            legacy(signature_manifest(ALICE_DIGEST)),
        ),
    )
    index = imagepolicies.Evidence(
        digest="sha256:" + "2" * 64,
        is_index=True,
        platforms=(("linux/amd64", signed), ("linux/arm64", signed)),
    )
    policy = compiled(spec())
    assert imagepolicies.judge(policy, index).passed
    partly = imagepolicies.Evidence(
        digest=index.digest,
        is_index=True,
        platforms=(
            ("linux/amd64", signed),
            ("linux/arm64", imagepolicies.Evidence(digest="sha256:" + "3" * 64)),
        ),
    )
    decision = imagepolicies.judge(policy, partly)
    assert not decision.passed
    assert "platform linux/arm64" in decision.message


def test_connaisseur_keyless_capture_through_the_engine(
    keyless_capture: Capture,
    keyless_trust: trust.TrustMaterial,
    keyless_roots: dict[str, authorities.Identity],
) -> None:
    # Connaisseur ships PEM trust material, not a trusted_root.json: build the compiled
    # authority from it directly (no bundle is judged: the capture is legacy only).
    template = compiled(keyless_spec(), {ROOT_SOURCE: PGI_ROOT})

    def with_identity(identity: authorities.Identity) -> imagepolicies.CompiledPolicy:
        authority = authorities.KeylessAuthority(
            name="philipp",
            identities=(identity,),
            trusted_root=trust.TrustedRoot.from_material(keyless_trust),
        )
        return imagepolicies.CompiledPolicy(
            name="keyless",
            generation=1,
            images=template.images,
            namespace_selector=None,
            mode="enforce",
            authorities=(authority,),
            threshold=1,
            pin_digests=True,
        )

    evidence = imagepolicies.Evidence(
        digest=KEYLESS_DIGEST,
        signatures=legacy_found(
            legacy(keyless_capture),
        ),
    )
    ok = imagepolicies.judge(with_identity(keyless_roots["philipp-keyless"]), evidence)
    assert ok.passed, ok.message
    wrong = imagepolicies.judge(with_identity(keyless_roots["bob-keyless"]), evidence)
    assert not wrong.passed
    assert "expected" in wrong.message


# --- static authorities and uncovered images ---------------------------------------------------


def test_static_pass_admits_without_evidence_and_says_so() -> None:
    policy = compiled(
        spec(images=["docker.io/istio/proxyv2"], authorities=[{"static": {"action": "pass"}}])
    )
    assert policy.static == "pass" and policy.authorities == ()
    assert (
        imagepolicies.sources_of(
            imagepolicies.parse_spec(spec(authorities=[{"static": {"action": "pass"}}]))
        )
        == ()
    )
    decision = imagepolicies.judge(policy, imagepolicies.Evidence(digest=ALICE_DIGEST))
    assert decision.passed
    assert decision.reason == imagepolicies.PASSED_UNSIGNED == "ImagePassedUnsigned"
    assert "'p'" in decision.message and "static pass" in decision.message
    assert imagepolicies.describe(policy)["static"] == "pass"


def test_static_fail_refuses_even_a_signed_image() -> None:
    policy = compiled(spec(authorities=[{"name": "never", "static": {"action": "fail"}}]))
    evidence = imagepolicies.Evidence(
        digest=ALICE_DIGEST,
        signatures=legacy_found(
            legacy(signature_manifest(ALICE_DIGEST)),
        ),
    )
    decision = imagepolicies.judge(policy, evidence)
    assert not decision.passed
    assert decision.reason == "ImageDisallowed"


def test_signers_are_not_static() -> None:
    assert imagepolicies.judge_static(compiled(spec())) is None


@pytest.mark.parametrize(
    ("default", "labels", "mode", "source"),
    [
        ("deny", {}, "deny", "the operator's default"),
        ("allow", {}, "allow", "the operator's default"),
        ("deny", {imagepolicies.UNCOVERED_LABEL: "allow"}, "allow", "label"),
        ("allow", {imagepolicies.UNCOVERED_LABEL: "deny"}, "deny", "label"),
        ("deny", {imagepolicies.UNCOVERED_LABEL: "Warn"}, "warn", "label"),
        # A typo never lets images in.
        ("allow", {imagepolicies.UNCOVERED_LABEL: "alow"}, "deny", "is not deny, warn or allow"),
    ],
)
def test_uncovered_mode_from_the_operator_and_the_namespace(
    default: str, labels: dict[str, str], mode: str, source: str
) -> None:
    found, said = imagepolicies.uncovered_mode(imagepolicies.Uncovered(default), labels)
    assert found == imagepolicies.Uncovered(mode)
    assert source in said


def test_uncovered_message_names_the_image_and_the_patterns_that_exist() -> None:
    image = "LOCALHOST:5000/app@sha256:" + "a" * 64
    reference = references.parse(image)
    policies = [compiled(spec(images=[f"127.0.0.1:5000/team{n}/**"])) for n in range(3)]
    message = imagepolicies.uncovered_message(
        image,
        reference,
        "team",
        policies,
        mode=imagepolicies.Uncovered.DENY,
        source="the operator's default",
    )
    assert repr(image) in message
    assert "localhost:5000/app" in message  # as it was read
    assert "127.0.0.1:5000/team0/** (p)" in message
    assert "namespace 'team'" in message and "denied" in message
    assert "static: {action: pass}" in message
    many = [compiled(spec(images=[f"r.io/a{n}/**" for n in range(20)]))]
    long = imagepolicies.uncovered_message(
        image, reference, "team", many, mode=imagepolicies.Uncovered.WARN, source="x"
    )
    assert "and 12 more" in long and "r.io/a7/**" in long and "r.io/a8/**" not in long
    assert "admitted with a warning" in long
    # A policy that covers the repository under another registry name comes first, and is
    # named: the likely fix is to use the name the policy gives.
    aliased = imagepolicies.uncovered_message(
        image,
        reference,
        "team",
        [
            compiled(spec(images=["ghcr.io/x/**"])),
            *policies,
            compiled(spec(images=["127.0.0.1:5000/**"])),
        ],
        mode=imagepolicies.Uncovered.DENY,
        source="x",
    )
    assert "apply here are 127.0.0.1:5000/** (p)," in aliased
    assert aliased.index("ghcr.io/x/**") > aliased.index("team2")
    assert "ImagePolicy 'p' covers this repository as 127.0.0.1:5000, another name" in aliased
    assert "another name" not in message
    none = imagepolicies.uncovered_message(
        image, reference, "team", [], mode=imagepolicies.Uncovered.DENY, source="x"
    )
    assert "no ImagePolicy applies to this namespace" in none


# --- pull secrets -------------------------------------------------------------------------------


def test_dockerconfigjson_is_normalised() -> None:
    auth = base64.b64encode(b"ci:s3cret").decode()
    data = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": auth},
                "registry.local:5000": {"username": "u", "password": "p"},
            }
        }
    ).encode()
    assert pullsecrets.parse(data) == {
        "docker.io": ("ci", "s3cret"),
        "registry.local:5000": ("u", "p"),
    }
    with pytest.raises(pullsecrets.InvalidPullSecret) as raised:
        pullsecrets.parse(json.dumps({"auths": {"r": {"auth": "%%%s3cret"}}}).encode())
    assert "s3cret" not in str(raised.value)
