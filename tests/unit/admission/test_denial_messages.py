"""What a denied person reads: the reason code, the deciding policy's own words, and whom the
policy trusts to sign."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from muster.gpu.rules import policies as gpupolicies
from muster.images import gate as imagegate
from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from muster.kernel import denials, findings, pods, references
from muster.models.rules import registry as modelregistry
from tests.paths import fixture

pytestmark = pytest.mark.unit

ALICE = fixture("sigstore", "connaisseur", "alice.key").read_text()
DIGEST = "sha256:" + "ab" * 32
SAYS = {
    "message": "Images here are signed by the release pipeline.",
    "helpURL": "https://wiki.example/signing",
    "owner": "#ml-platform",
}


def _policy(**spec: Any) -> imagepolicies.CompiledPolicy:
    data = {
        "images": ["registry.example/**"],
        "authorities": [{"name": "release", "key": {"data": ALICE}}],
    }
    return imagepolicies.compile_policy(
        "release", 1, imagepolicies.parse_spec({**data, **spec}), {}
    )


def _denied(policy: imagepolicies.CompiledPolicy, mode: findings.Mode) -> findings.Verdict:
    decision = imagepolicies.judge(policy, imagepolicies.Evidence(digest=DIGEST))
    image = "registry.example/app@" + DIGEST
    use = pods.ImageUse("container", "main", image, "/spec/containers/0/image")
    result = imageverifier.ImageResult(references.parse(image), DIGEST, ((policy, decision),))
    found = imagegate.failure_findings(use, image, result)
    return findings.judge(
        [findings.Finding(f.check, f.reason, f.subject, f.message, mode, f.policy) for f in found]
    )


def test_a_denial_names_its_reason_and_the_expected_signer() -> None:
    message = _denied(_policy(), findings.Mode.ENFORCE).message()
    assert message.startswith('muster: container "main": image ')
    assert (
        f"no signature found for {DIGEST}; it must be signed (cosign sign) by release (" in message
    )
    assert message.endswith(") [ImageNotSigned]")
    assert "\n" not in message  # no policy words: one line, as before


def test_the_policy_s_own_words_follow_its_denials() -> None:
    verdict = _denied(_policy(denial=SAYS), findings.Mode.ENFORCE)
    lines = verdict.message().splitlines()
    assert lines[0].endswith("[ImageNotSigned]")
    assert lines[1:] == [
        "  ImagePolicy release: Images here are signed by the release pipeline.",
        "  help: https://wiki.example/signing",
        "  ask: #ml-platform",
    ]


def test_a_warning_stays_on_one_line() -> None:
    (line,) = _denied(_policy(denial={"owner": "#ml-platform"}), findings.Mode.WARN).warning_lines()
    assert line.endswith("[ImageNotSigned]; ImagePolicy release: ask: #ml-platform")


def test_several_denials_each_carry_their_own() -> None:
    ref = findings.PolicyRef("ModelPolicy", "ml", denial=denials.DenialSpec(owner="#ml"))
    verdict = findings.judge(
        [
            findings.Finding("models", "ModelNotApproved", "volume", "not approved", policy=ref),
            findings.Finding("pinning", "ImageNotPinned", "container", "not pinned"),
        ]
    )
    assert verdict.message() == (
        "muster: 2 violations:\n"
        "- volume: not approved [ModelNotApproved]\n"
        "  ModelPolicy ml: ask: #ml\n"
        "- container: not pinned [ImageNotPinned]"
    )


def test_every_policy_kind_takes_the_same_denial_and_checks_it() -> None:
    gpupolicies.parse_spec({"denial": SAYS})
    modelregistry.ModelPolicySpec.model_validate({"denial": SAYS})
    assert _policy(denial=SAYS).denial == denials.DenialSpec.model_validate(SAYS)
    for bad in (
        {"helpURL": "javascript:alert(1)"},
        {"owner": ""},
        {"message": "x" * 300},
        {"other": 1},
    ):
        with pytest.raises(pydantic.ValidationError):
            denials.DenialSpec.model_validate(bad)
    # The policy's words are not part of its identity (Events and BOMs compare policies).
    assert ref_of("a", SAYS) == ref_of("a", None)


def ref_of(name: str, says: dict[str, str] | None) -> findings.PolicyRef:
    return findings.PolicyRef(
        "ImagePolicy", name, denial=denials.DenialSpec.model_validate(says) if says else None
    )


def test_keyless_signers_are_named_by_identity() -> None:
    root = imagepolicies.Source("ConfigMap", "sigstore", "root", "trusted_root.json")
    policy = imagepolicies.compile_policy(
        "ci",
        1,
        imagepolicies.parse_spec(
            {
                "images": ["registry.example/**"],
                "authorities": [
                    {
                        "name": "ci",
                        "keyless": {
                            "identities": [
                                {
                                    "issuer": "https://token.actions.githubusercontent.com",
                                    "subjectRegExp": "https://github.com/acme/.*",
                                }
                            ],
                            "trustedRoot": {"namespace": "sigstore", "name": "root"},
                        },
                    }
                ],
            }
        ),
        {root: fixture("sigstore", "cosign", "trusted_root_pgi.json").read_bytes()},
    )
    assert imagepolicies.expected_signers(policy) == (
        "ci (keyless: /https://github.com/acme/.*/ from https://token.actions.githubusercontent.com)"
    )
