"""ImagePolicy attestations: predicate types, signers and CEL conditions over real statements
made by cosign v2 (``.att``) and v3 (bundles)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from muster.images.rules import policies as imagepolicies
from muster.signatures.rules import attestations, conditions, formats
from muster.signatures.rules import bundles as bundlerules
from tests.paths import fixture

pytestmark = pytest.mark.unit

DIGEST = json.loads(fixture("attestations", "image.json").read_text())["digest"]
NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
ALICE = fixture("attestations", "alice.pub").read_text()
BOB = fixture("attestations", "bob.pub").read_text()
BUILDER = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"


def legacy() -> tuple[attestations.Item, ...]:
    manifest = json.loads(fixture("attestations", "v2-att-manifest.json").read_text())
    return tuple(
        attestations.LegacyAttestation(
            index=index,
            envelope=fixture("attestations", f"v2-att-layer{index + 1}.dsse.json").read_bytes(),
            annotations=layer["annotations"],
        )
        for index, layer in enumerate(manifest["layers"])
    )


def bundles() -> tuple[attestations.Item, ...]:
    return tuple(
        attestations.BundleAttestation(
            fixture("attestations", f"v3-{name}.sigstore.json").read_bytes()
        )
        for name in ("slsa-v1", "cyclonedx")
    )


def compiled(*required: dict[str, Any], signer: str = ALICE) -> imagepolicies.CompiledPolicy:
    spec = imagepolicies.parse_spec(
        {
            "images": ["**"],
            "authorities": [{"name": "release", "key": {"data": ALICE}}],
            "attestations": [
                {"authorities": [{"name": "ci", "key": {"data": signer}}], **attestation}
                for attestation in required
            ],
        }
    )
    return imagepolicies.compile_policy("p", 1, spec, {})


def evidence(found: tuple[attestations.Item, ...]) -> imagepolicies.Evidence:
    signature = fixture("attestations", "v3-signature.sigstore.json").read_bytes()
    return imagepolicies.Evidence(
        digest=DIGEST,
        signatures=(formats.Found(bundlerules.FORMAT, (signature,)),),
        attestations=found,
        now=NOW,
    )


PROVENANCE = {
    "name": "provenance",
    "predicateType": "slsaprovenance1",
    "conditions": [
        {"name": "builder", "expression": f'predicate.runDetails.builder.id == "{BUILDER}"'},
        {
            "name": "source",
            "expression": "predicate.buildDefinition.resolvedDependencies.exists(d, "
            'd.uri.startsWith("git+https://github.com/acme/"))',
        },
        {
            "name": "fresh",
            "expression": "timestamp(predicate.runDetails.metadata.startedOn)"
            ' > now - duration("720h")',
        },
    ],
}
SBOM = {
    "name": "sbom",
    "predicateType": "https://cyclonedx.org/bom",
    "conditions": [
        {
            "name": "deny-list",
            "expression": '!predicate.components.exists(c, c.name in ["log4j-core", "xz-utils"])',
            "message": "no package on the deny list",
        }
    ],
}


@pytest.mark.parametrize("found", [legacy(), bundles()], ids=["cosign-v2", "cosign-v3"])
def test_provenance_and_sbom_conditions_pass(found: tuple[attestations.Item, ...]) -> None:
    decision = imagepolicies.judge(compiled(PROVENANCE, SBOM), evidence(found))
    assert decision.passed, decision.message
    assert decision.reason == "Verified"


def test_slsa_v02_provenance_is_its_own_predicate_type() -> None:
    v02 = {
        "name": "provenance",
        "predicateType": "slsaprovenance02",
        "conditions": [
            {
                "expression": 'predicate.invocation.configSource.uri.startsWith("git+https://github.com/acme/")'
            }
        ],
    }
    assert imagepolicies.judge(compiled(v02), evidence(legacy())).passed
    # The v3 bundles hold no v0.2 provenance: the requirement is not met.
    missing = imagepolicies.judge(compiled(v02), evidence(bundles()))
    assert missing.reason == conditions.MISSING
    assert "https://slsa.dev/provenance/v0.2" in missing.message


@pytest.mark.parametrize("found", [legacy(), bundles()], ids=["cosign-v2", "cosign-v3"])
def test_a_failing_condition_names_the_attestation_the_condition_and_the_value(
    found: tuple[attestations.Item, ...],
) -> None:
    wrong_builder = {
        "name": "provenance",
        "predicateType": "https://slsa.dev/provenance/v1",
        "conditions": [
            {
                "name": "org-ci",
                "expression": 'predicate.runDetails.builder.id.startsWith("https://ci.acme.internal/")',
                "message": "built by the organisation's CI",
            }
        ],
    }
    decision = imagepolicies.judge(compiled(wrong_builder), evidence(found))
    assert not decision.passed
    assert decision.reason == conditions.CONDITION_FAILED
    assert "attestation 'provenance' (https://slsa.dev/provenance/v1)" in decision.message
    assert "condition 'org-ci' (built by the organisation's CI) is false" in decision.message
    assert f'predicate.runDetails.builder.id = "{BUILDER}"' in decision.message


def test_an_sbom_with_a_denied_package_is_refused_with_the_package_list_shown() -> None:
    denied = {
        "name": "sbom",
        "predicateType": "cyclonedx",
        "conditions": [
            {
                "name": "no-requests",
                "expression": '!predicate.components.exists(c, c.name == "requests")',
            }
        ],
    }
    decision = imagepolicies.judge(compiled(denied), evidence(bundles()))
    assert decision.reason == conditions.CONDITION_FAILED
    assert "condition 'no-requests' is false" in decision.message
    assert 'predicate.components = [{"bom-ref": "pkg:pypi/python@3.12.7"' in decision.message


def test_too_old_provenance_is_refused() -> None:
    fresh = {
        "name": "provenance",
        "predicateType": "slsaprovenance1",
        "conditions": [
            {
                "expression": "timestamp(predicate.runDetails.metadata.startedOn)"
                ' > now - duration("24h")'
            }
        ],
    }
    decision = imagepolicies.judge(compiled(fresh), evidence(legacy()))
    assert decision.reason == conditions.CONDITION_FAILED
    assert 'predicate.runDetails.metadata.startedOn = "2026-12-01T10:00:00Z"' in decision.message


def test_a_condition_that_errors_fails_closed() -> None:
    absent = {
        "name": "provenance",
        "predicateType": "slsaprovenance1",
        "conditions": [{"name": "level", "expression": "predicate.slsaLevel >= 3"}],
    }
    decision = imagepolicies.judge(compiled(absent), evidence(bundles()))
    assert decision.reason == conditions.CONDITION_FAILED
    assert "condition 'level' could not be evaluated" in decision.message
    assert "predicate.slsaLevel is absent" in decision.message
    not_boolean = {
        "name": "provenance",
        "predicateType": "slsaprovenance1",
        "conditions": [{"expression": "predicate.runDetails.builder.id"}],
    }
    decision = imagepolicies.judge(compiled(not_boolean), evidence(bundles()))
    assert "not a boolean" in decision.message


@pytest.mark.parametrize("found", [legacy(), bundles()], ids=["cosign-v2", "cosign-v3"])
def test_an_attestation_by_the_wrong_signer_is_missing(
    found: tuple[attestations.Item, ...],
) -> None:
    decision = imagepolicies.judge(compiled(PROVENANCE, signer=BOB), evidence(found))
    assert decision.reason == conditions.MISSING
    assert "signed by ci (" in decision.message
    assert "signature does not verify" in decision.message


def test_an_attestation_about_another_image_is_missing() -> None:
    other = "sha256:" + "2" * 64
    decision = imagepolicies.judge(
        compiled(PROVENANCE),
        imagepolicies.Evidence(digest=other, signatures=(), attestations=legacy(), now=NOW),
    )
    # Unsigned first; the attestation is judged only for a signed image.
    assert decision.reason == "ImageNotSigned"
    verdict = conditions.judge(compiled(PROVENANCE).attestations, legacy(), digest=other, now=NOW)
    assert verdict.reason == conditions.MISSING
    assert f"not the image {other}" in verdict.message


def test_an_absent_predicate_type_is_missing() -> None:
    vuln = {"name": "scan", "predicateType": "vuln"}
    decision = imagepolicies.judge(compiled(vuln), evidence(legacy()))
    assert decision.reason == conditions.MISSING
    assert "other predicate types" in decision.message
    assert "https://cosign.sigstore.dev/attestation/vuln/v1" in decision.message
    nothing = imagepolicies.judge(compiled(vuln), evidence(()))
    assert "the image carries no attestation" in nothing.message


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("predicate.", "does not compile"),
        ("image.name == 'x'", "reads image"),
    ],
)
def test_conditions_that_cannot_work_keep_the_policy_from_compiling(
    expression: str, message: str
) -> None:
    with pytest.raises(imagepolicies.InvalidImagePolicy, match=message):
        compiled(
            {"name": "p", "predicateType": "cyclonedx", "conditions": [{"expression": expression}]}
        )


def test_static_authorities_and_notation_cannot_sign_attestations() -> None:
    with pytest.raises(imagepolicies.InvalidImagePolicy, match="keys or keyless"):
        imagepolicies.parse_spec(
            {
                "images": ["**"],
                "authorities": [{"key": {"data": ALICE}}],
                "attestations": [
                    {
                        "name": "a",
                        "predicateType": "x",
                        "authorities": [{"static": {"action": "pass"}}],
                    }
                ],
            }
        )


def test_describe_lists_the_attestations() -> None:
    described = imagepolicies.describe(compiled(PROVENANCE))
    assert described["attestations"] == [
        {
            "name": "provenance",
            "predicateType": "https://slsa.dev/provenance/v1",
            "authorities": ["ci"],
            "conditions": ["builder", "source", "fresh"],
        }
    ]
