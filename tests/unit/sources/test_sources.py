"""kernel.sources: storage URIs read as canonical text, and the TrainJob initializer fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from muster.kernel import sources
from muster.kernel.sources import SourceError

TRAINJOB_CRD = (
    Path(__file__).parents[2]
    / "fixtures"
    / "crds"
    / "kubeflow-trainer-v2.3.0"
    / "trainer.kubeflow.org_trainjobs.yaml"
)
pytestmark = pytest.mark.unit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("uri", "text", "revision"),
    [
        ("hf://org/name@v1.0", "hf://org/name@v1.0", "v1.0"),
        ("HF://org/name:main", "hf://org/name@main", "main"),  # KServe's :revision spelling
        ("hf://models/org/name@" + COMMIT.upper(), "hf://org/name@" + COMMIT, COMMIT),
        ("hf://datasets/org/data@rev", "hf://datasets/org/data@rev", "rev"),
        ("hf://gpt2", "hf://gpt2", None),
        ("s3://bucket/prefix/", "s3://bucket/prefix", None),
        ("gs://bucket", "gs://bucket", None),
        ("HTTPS://Example.COM:443/a/b/", "https://example.com/a/b", None),
        ("http://host:8080/m.tar?x=1", "http://host:8080/m.tar?x=1", None),
        (
            "oci://reg.local:5000/org/model@sha256:" + "a" * 64,
            "oci://reg.local:5000/org/model@sha256:" + "a" * 64,
            "sha256:" + "a" * 64,
        ),
        ("pvc://claim/models/x", "pvc://claim/models/x", None),
    ],
)
def test_canonical_text(uri: str, text: str, revision: str | None) -> None:
    parsed = sources.parse(uri)
    assert parsed.text == text
    assert parsed.revision == revision
    assert sources.parse(parsed.text) == parsed


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("", "empty"),
        ("org/name", "no scheme"),
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        ("hf://org/name@", "empty revision"),
        ("hf://a/b/c", "expected hf://org/name"),
        ("hf://org/na..me@1", "not a valid Hugging Face"),
        ("hf://org/name@ bad", "whitespace"),
        ("s3://B/x", "not a valid bucket"),
        ("s3://bucket/a/../b", "'..'"),
        ("https:///path", "no host"),
        ("https://user:pw@host/x", "credentials"),
        ("https://host/x#frag", "fragment"),
        ("oci://reg/repo@sha256:abc", "not a sha256/sha512 digest"),
        ("pvc://Bad_Name", "not a valid claim name"),
    ],
)
def test_malformed_uris_say_what_is_wrong(uri: str, words: str) -> None:
    with pytest.raises(SourceError, match=re.escape(words)):
        sources.parse(uri)


def test_matches_is_canonical_equality_and_needs_a_pinned_hf_revision() -> None:
    assert sources.matches("hf://org/name@v1", "hf://org/name:v1")
    assert sources.matches("hf://org/name@" + COMMIT, "hf://org/name@" + COMMIT.upper())
    assert not sources.matches("hf://org/name@v1", "hf://org/name@v2")
    assert not sources.matches("hf://org/name@v1", "hf://org/name")
    assert not sources.matches("hf://org/name", "hf://org/name")  # unpinned matches nothing
    assert not sources.matches("hf://datasets/org/name@v1", "hf://org/name@v1")
    assert sources.matches("s3://bucket/prefix/", "s3://bucket/prefix")
    assert not sources.matches("s3://bucket/prefix", "s3://bucket/prefix/sub")
    assert sources.matches("https://example.com:443/m", "https://EXAMPLE.com/m/")
    assert not sources.matches("https://example.com/m", "http://example.com/m")
    assert not sources.matches("not a uri", "not a uri")
    assert sources.parse("hf://org/name").pinned is False
    assert sources.parse("s3://bkt/k").pinned is True
    assert set(sources.DOWNLOADED) == {"hf", "s3", "gs", "https", "http"}


def test_trainer_initializer_uris_follow_the_real_trainjob_schema() -> None:
    crd = yaml.safe_load(TRAINJOB_CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    initializer = spec["initializer"]["properties"]
    assert "storageUri" in initializer["dataset"]["properties"]
    assert "storageUri" in initializer["model"]["properties"]
    job = {
        "spec": {
            "initializer": {
                "dataset": {"storageUri": "hf://datasets/org/data@r1"},
                "model": {"storageUri": " hf://org/model@r2 "},
            }
        }
    }
    assert sources.trainer_initializer_uris(job) == {
        "dataset": "hf://datasets/org/data@r1",
        "model": "hf://org/model@r2",
    }
    older = {
        "spec": {
            "datasetConfig": {"storageUri": "s3://b/d"},
            "modelConfig": {"input": {"storageUri": "gs://b/m"}},
        }
    }
    assert sources.trainer_initializer_uris(older) == {"dataset": "s3://b/d", "model": "gs://b/m"}
    assert (
        sources.trainer_initializer_uris({"spec": {"initializer": {"model": {"storageUri": ""}}}})
        == {}
    )
    assert sources.trainer_initializer_uris({"spec": None}) == {}
