"""The Dataset and DatasetPolicy specs, the index the gates read and the pod annotation."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from muster.datasets.rules import registry

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "a" * 64
OCI = "sha256:" + "b" * 64


def _spec(**extra: Any) -> dict[str, Any]:
    return {"digest": DIGEST, **extra}


def test_a_full_dataset_spec_validates() -> None:
    entry = registry.parse_dataset(
        "corpus",
        _spec(
            ociReference=f"registry.example/data/corpus@{OCI}",
            sources=["hf://datasets/org/corpus@0123abc", "s3://bucket/prefix"],
            license="Apache-2.0 AND CC-BY-4.0",
            lineage={
                "parents": ["raw"],
                "transformation": {"description": "dedup", "codeReference": "git+https://h/r@1"},
            },
            description="cleaned",
        ),
        {},
        generation=1,
    )
    assert entry.spec.oci_digest == OCI
    assert entry.spec.parents == ("raw",)
    assert entry.spec.hashing.method == "files"
    assert not entry.signature_verified


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        (_spec(license="Apache-2.0 AND"), "InvalidLicense", "license"),
        (_spec(license="Not-A-Licence-1.0"), "InvalidLicense", "Not-A-Licence"),
        (_spec(ociReference="registry.example/data:latest"), "InvalidSpec", "pinned"),
        (_spec(sources=["ftp://host/file"]), "InvalidSpec", "sources"),
        (_spec(lineage={"parents": ["Not A Name"]}), "InvalidSpec", "parents"),
        ({"digest": "sha256:short"}, "InvalidSpec", "digest"),
        (_spec(colour="blue"), "InvalidSpec", "colour"),
    ],
)
def test_invalid_specs_are_refused_with_their_reason(
    spec: dict[str, Any], reason: str, words: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        registry.parse_dataset("d", spec, {}, generation=1)
    assert registry.invalid_reason(raised.value) == reason
    assert words in str(raised.value)


def test_signature_counts_only_for_its_generation() -> None:
    status = {
        "conditions": [{"type": "SignatureVerified", "status": "True", "observedGeneration": 2}]
    }
    assert registry.parse_dataset("d", _spec(), status, generation=2).signature_verified
    assert not registry.parse_dataset("d", _spec(), status, generation=3).signature_verified


def test_index_lookups() -> None:
    index = registry.DatasetIndex()
    a = registry.parse_dataset(
        "a",
        _spec(ociReference=f"r.example/x@{OCI}", sources=["hf://datasets/org/a@v1"]),
        {},
        generation=1,
    )
    b = registry.parse_dataset("b", _spec(sources=["s3://bucket/b/"]), {}, generation=1)
    index.invalid["Dataset/a"] = "was broken"
    index.put_dataset(a)
    index.put_dataset(b)
    assert "Dataset/a" not in index.invalid
    assert index.by_name("a") is a and index.by_name("c") is None
    assert index.by_digest(DIGEST) == [a, b]
    assert index.by_oci_digest(OCI) == [a]
    # Canonical matching: hf:// needs the same revision, s3 ignores the trailing slash.
    assert index.by_source("hf://datasets/org/a@v1") == [a]
    assert index.by_source("hf://datasets/org/a@v2") == []
    assert index.by_source("hf://datasets/org/a") == []
    assert index.by_source("s3://bucket/b") == [b]


def test_policies_select_namespaces_by_label() -> None:
    index = registry.DatasetIndex()
    index.put_policy("all", registry.DatasetPolicySpec())
    index.put_policy(
        "team",
        registry.DatasetPolicySpec.model_validate(
            {
                "namespaceSelector": {"matchLabels": {"team": "ml"}},
                "mode": "warn",
                "requireSignature": True,
                "licenses": {"allow": ["Apache-2.0"], "deny": ["CC-BY-NC-*"]},
                "volumes": "declaredOnly",
            }
        ),
    )
    assert list(index.named_policies_for({"team": "ml"})) == ["all", "team"]
    assert list(index.named_policies_for({})) == ["all"]
    assert index.policies["team"].licenses.deny == ("CC-BY-NC-*",)
    assert index.policies["all"].volumes == "declared"


def test_policy_with_an_unknown_volume_mode_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.DatasetPolicySpec.model_validate({"volumes": "anything"})


def test_annotation_round_trip_and_malformed_values() -> None:
    entries = [registry.parse_dataset(n, _spec(), {}, generation=1) for n in ("b", "a", "b")]
    text = registry.encode_datasets_annotation(entries)
    assert text == f'[{{"name":"a","digest":"{DIGEST}"}},{{"name":"b","digest":"{DIGEST}"}}]'
    assert registry.decode_datasets_annotation(text) == [("a", DIGEST), ("b", DIGEST)]
    for bad in (None, 3, "not json", '{"name": "a"}', '[{"digest": "x"}, 5]'):
        assert registry.decode_datasets_annotation(bad) == []
