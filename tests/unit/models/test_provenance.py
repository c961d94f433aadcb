"""Model provenance: a statement over the OMS digest made by the real cosign (attest-blob),
verified with the image attestations' DSSE path and judged by the same CEL conditions; the
admission decision, the status it is read from, and the AI-BOM's verified properties."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pydantic
import pytest

from muster.boms.rules import cyclonedx
from muster.models import files as modelfiles
from muster.models.rules import approval as modelgate
from muster.models.rules import provenance as modelprovenance
from muster.models.rules import registry as modelregistry
from tests import attesting
from tests import modelprovenance as making

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
ORG_CI = "predicate.runDetails.builder.id.startsWith('https://github.com/acme/')"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real model's OMS digest and provenance bundles over it by the real cosign."""
    workdir = tmp_path_factory.mktemp("provenance")
    model = workdir / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x01" * 4096)
    (model / "config.json").write_text('{"layers": 2}\n')
    digest = modelfiles.measure(model).digest
    key, public = attesting.generate_key(workdir, "ci")
    other_key, other_public = attesting.generate_key(workdir, "other")
    return {
        "digest": digest,
        "public": public.read_text(),
        "other_public": other_public.read_text(),
        "good": making.attest(key, digest, workdir),
        "elsewhere": making.attest(key, digest, workdir, making.slsa_v1("https://evil.example/b")),
        "other_subject": making.attest(key, "sha256:" + "0f" * 32, workdir),
        "by_other": making.attest(other_key, digest, workdir),
        "v02": making.attest(key, digest, workdir, attesting.slsa_v02(), kind="slsaprovenance02"),
    }


def spec(
    signed: dict[str, Any], bundle: str, public: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "digest": signed["digest"],
        "provenance": {
            "bundle": bundle,
            "authorities": [{"name": "ci", "key": {"data": public or signed["public"]}}],
            "conditions": [{"name": "org-ci", "expression": ORG_CI, "message": "built by our CI"}],
            **extra,
        },
    }


def verify(signed: dict[str, Any], bundle: str, **kwargs: Any) -> modelprovenance.Verified:
    model = modelregistry.ModelSpec.model_validate(spec(signed, bundle, **kwargs))
    assert model.provenance is not None
    requirement = modelprovenance.requirement(model.provenance, {})
    return modelprovenance.verify(
        requirement, model.provenance.bundle, digest=model.digest, now=NOW
    )


def test_provenance_over_the_oms_digest_verifies_with_builder_source_and_materials(
    signed: dict[str, Any],
) -> None:
    verified = verify(signed, signed["good"])
    assert verified.digest == signed["digest"]
    assert verified.predicate_type == "https://slsa.dev/provenance/v1"
    assert verified.builder == making.BUILDER
    assert verified.source == making.SOURCE
    assert verified.build_type == "https://actions.github.io/buildtypes/workflow/v1"
    assert [m.to_json() for m in verified.materials] == [
        {"uri": making.SOURCE, "digest": "gitCommit:0c1f4f3c8a1e2b7d9c6f0a5e1b3d7c9f2a4e6b8d"},
        {"uri": "hf://datasets/acme/corpus@v3", "digest": "sha256:" + "ab" * 32},
    ]
    assert verified.authority == "ci"
    assert verified.signer.startswith("ECDSA P-256 key sha256:")
    assert "built by " + making.BUILDER in verified.summary()


def test_slsa_v02_provenance_names_builder_and_config_source(signed: dict[str, Any]) -> None:
    verified = verify(
        signed,
        signed["v02"],
        predicateType="slsaprovenance02",
        conditions=[{"expression": "predicate.builder.id.contains('slsa-github-generator')"}],
    )
    assert verified.predicate_type == "https://slsa.dev/provenance/v0.2"
    assert verified.builder is not None and "slsa-github-generator" in verified.builder
    assert verified.source == attesting.SOURCE


def test_a_statement_about_other_bytes_proves_nothing(signed: dict[str, Any]) -> None:
    with pytest.raises(modelprovenance.Unverified) as refused:
        verify(signed, signed["other_subject"])
    assert refused.value.reason == modelprovenance.NOT_VERIFIED
    assert signed["digest"] in refused.value.message
    assert "statement has no subject with digest" in refused.value.message


def test_a_statement_signed_by_another_key_is_refused(signed: dict[str, Any]) -> None:
    with pytest.raises(modelprovenance.Unverified) as refused:
        verify(signed, signed["by_other"])
    assert refused.value.reason == modelprovenance.NOT_VERIFIED
    assert "ci (ECDSA P-256 key sha256:" in refused.value.message
    # The right statement by the right key, judged with another authority's key, also fails.
    with pytest.raises(modelprovenance.Unverified):
        verify(signed, signed["good"], public=signed["other_public"])


def test_a_failed_condition_names_itself_and_the_value_read(signed: dict[str, Any]) -> None:
    with pytest.raises(modelprovenance.Unverified) as refused:
        verify(signed, signed["elsewhere"])
    assert refused.value.reason == modelprovenance.CONDITION_FAILED
    message = refused.value.message
    assert "condition 'org-ci' (built by our CI) is false" in message
    assert 'predicate.runDetails.builder.id = "https://evil.example/b"' in message


def test_a_statement_of_another_predicate_type_is_refused(signed: dict[str, Any]) -> None:
    with pytest.raises(modelprovenance.Unverified) as refused:
        verify(signed, signed["v02"])
    assert "of predicate type https://slsa.dev/provenance/v0.2" in refused.value.message


def test_a_condition_that_does_not_compile_makes_the_model_invalid(
    signed: dict[str, Any],
) -> None:
    broken = spec(signed, signed["good"])
    broken["provenance"]["conditions"] = [{"expression": "predicate.x ==="}]
    with pytest.raises(pydantic.ValidationError, match="does not compile"):
        modelregistry.ModelSpec.model_validate(broken)
    keyless_and_key = spec(signed, signed["good"])
    keyless_and_key["provenance"]["authorities"][0]["keyless"] = {
        "identities": [{"issuer": "https://i", "subject": "s"}],
        "trustedRoot": {"namespace": "muster", "name": "root"},
    }
    with pytest.raises(pydantic.ValidationError, match="exactly one of key and keyless"):
        modelregistry.ModelSpec.model_validate(keyless_and_key)
    nowhere = spec(signed, signed["good"])
    del nowhere["provenance"]["bundle"]
    with pytest.raises(pydantic.ValidationError, match="needs a bundle, or an ociReference"):
        modelregistry.ModelSpec.model_validate(nowhere)


def test_keys_and_roots_from_secrets_and_configmaps_must_be_given(signed: dict[str, Any]) -> None:
    model = spec(signed, signed["good"])
    model["provenance"]["authorities"] = [
        {"key": {"secretRef": {"namespace": "muster", "name": "ci-key", "key": "key.pub"}}}
    ]
    parsed = modelregistry.ModelSpec.model_validate(model).provenance
    assert parsed is not None
    (source,) = modelprovenance.sources(parsed)
    assert str(source) == "Secret muster/ci-key key 'key.pub'"
    with pytest.raises(modelprovenance.Unverified, match="was not found"):
        modelprovenance.requirement(parsed, {})
    requirement = modelprovenance.requirement(parsed, {source: signed["public"].encode()})
    verified = modelprovenance.verify(requirement, parsed.bundle, digest=signed["digest"], now=NOW)
    assert verified.authority == "authorities[0]"


def status_of(verified: modelprovenance.Verified, generation: int) -> dict[str, Any]:
    return {
        "conditions": [
            {"type": "ProvenanceVerified", "status": "True", "observedGeneration": generation}
        ],
        "provenance": verified.to_status(),
    }


def test_only_a_current_status_for_this_digest_counts(signed: dict[str, Any]) -> None:
    verified = verify(signed, signed["good"])
    body = spec(signed, signed["good"])
    entry = modelregistry.parse_model("m", body, status_of(verified, 3), generation=3)
    assert entry.provenance == verified  # the status round-trips every fact
    stale = modelregistry.parse_model("m", body, status_of(verified, 2), generation=3)
    assert stale.provenance is None
    moved = {**body, "digest": "sha256:" + "77" * 32}
    assert (
        modelregistry.parse_model("m", moved, status_of(verified, 3), generation=3).provenance
        is None
    )
    unrequired = {"digest": signed["digest"]}
    assert (
        modelregistry.parse_model("m", unrequired, status_of(verified, 3), generation=3).provenance
        is None
    )


def test_a_policy_requiring_provenance_denies_models_without_it(signed: dict[str, Any]) -> None:
    use = modelgate.ModelUse("declaredVolume", "weights", "llama")
    strict = modelregistry.ModelPolicySpec.model_validate({"requireProvenance": True})
    lenient = modelregistry.ModelPolicySpec()
    index = modelregistry.Index()
    bare = modelregistry.ModelEntry("llama", modelregistry.ModelSpec(digest=signed["digest"]))
    index.put_model(bare)
    denied = modelgate.judge_use(use, index, strict)
    assert denied.finding is not None
    assert denied.finding.reason == "ModelProvenanceNotVerified"
    assert "Model 'llama' has no verified provenance" in denied.finding.message
    assert "the Model names none" in denied.finding.message
    assert modelgate.judge_use(use, index, lenient).finding is None
    body = spec(signed, signed["good"])
    unverified = modelregistry.parse_model("llama", body, {}, generation=1)
    index.put_model(unverified)
    pending = modelgate.judge_use(use, index, strict)
    assert pending.finding is not None
    assert "not been verified for this spec yet" in pending.finding.message
    failed = {
        "conditions": [
            {
                "type": "ProvenanceVerified",
                "status": "False",
                "observedGeneration": 1,
                "message": "no provenance about it signed by ci",
            }
        ]
    }
    index.put_model(modelregistry.parse_model("llama", body, failed, generation=1))
    refused = modelgate.judge_use(use, index, strict)
    assert refused.finding is not None
    assert refused.finding.message.endswith("requires one: no provenance about it signed by ci")
    verified = verify(signed, signed["good"])
    index.put_model(modelregistry.parse_model("llama", body, status_of(verified, 1), generation=1))
    assert modelgate.judge_use(use, index, strict).finding is None
    combined = modelgate.effective_policy([lenient, strict])
    assert combined is not None and combined.require_provenance


def test_the_ai_bom_tells_verified_provenance_from_declarations(signed: dict[str, Any]) -> None:
    verified = verify(signed, signed["good"])
    body = {**spec(signed, signed["good"]), "source": "hf://acme/llama@main"}
    model = {"metadata": {"name": "llama", "generation": 4}, "spec": body}
    components, _, _ = cyclonedx._model_components(
        "llama", {**model, "status": status_of(verified, 4)}
    )
    properties = [(p["name"], p["value"]) for p in components[0]["properties"]]
    verified_props = [p for p in properties if p[0].startswith("muster:verified:provenance")]
    assert verified_props == [
        ("muster:verified:provenance", "True"),
        ("muster:verified:provenance:predicate-type", "https://slsa.dev/provenance/v1"),
        ("muster:verified:provenance:signer", verified.signer),
        ("muster:verified:provenance:builder", making.BUILDER),
        ("muster:verified:provenance:build-type", verified.build_type),
        ("muster:verified:provenance:source", making.SOURCE),
        (
            "muster:verified:provenance:material",
            f"{making.SOURCE}@gitCommit:0c1f4f3c8a1e2b7d9c6f0a5e1b3d7c9f2a4e6b8d",
        ),
        ("muster:verified:provenance:material", "hf://datasets/acme/corpus@v3@sha256:" + "ab" * 32),
    ]
    # The declared source stays where declarations go, apart from the verified one.
    assert {"type": "distribution", "url": "hf://acme/llama@main"} in components[0][
        "externalReferences"
    ]
    stale, _, _ = cyclonedx._model_components("llama", {**model, "status": status_of(verified, 3)})
    assert [p for p in stale[0]["properties"] if p["name"].startswith("muster:verified")] == [
        {"name": "muster:verified:provenance", "value": "False"}
    ]
    assert json.dumps(stale)  # serialisable
