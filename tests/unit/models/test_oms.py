"""The OMS format itself: ordering, digests, statements, differences, PAE."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muster.signatures.rules import oms

pytestmark = pytest.mark.unit


def test_resources_are_ordered_by_path_components_not_raw_strings() -> None:
    # '.' sorts before '/', so a raw string sort would put sub.txt first.
    names = ["sub.txt", "sub/x", "a-b/y", ".hidden", "empty"]
    ordered = sorted(names, key=oms.sort_key)
    assert ordered == [".hidden", "a-b/y", "empty", "sub/x", "sub.txt"]
    assert sorted(names) != ordered


def test_shards_are_ordered_by_path_then_offsets() -> None:
    names = ["b:0:10", "a:10:20", "a:0:10", "a/c:0:1"]
    assert sorted(names, key=lambda n: oms.sort_key(n, "shards")) == [
        "a:0:10",
        "a:10:20",
        "a/c:0:1",
        "b:0:10",
    ]


def test_root_digest_is_sha256_over_raw_resource_digests() -> None:
    one, two = hashlib.sha256(b"1").hexdigest(), hashlib.sha256(b"2").hexdigest()
    resources = [oms.Resource("a", "sha256", one), oms.Resource("b", "sha256", two)]
    expected = hashlib.sha256(bytes.fromhex(one) + bytes.fromhex(two)).hexdigest()
    assert oms.root_digest(resources) == expected
    manifest = oms.Manifest.build("m", reversed(resources), oms.Serialization())
    assert manifest.digest == f"sha256:{expected}"


def test_statement_round_trips_and_matches_model_signing_shape() -> None:
    resources = [oms.Resource("w.bin", "sha256", "ab" * 32), oms.Resource("c", "sha256", "cd" * 32)]
    manifest = oms.Manifest.build("model", resources, oms.Serialization(ignore_paths=("x",)))
    statement = oms.build_statement(manifest)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["c", "w.bin"]
    assert statement["predicate"]["serialization"] == {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": ["x"],
    }
    payload = json.dumps(statement).encode()
    parsed = oms.statement_from_payload(oms.PAYLOAD_TYPE, payload)
    assert parsed == manifest


def test_statement_whose_resources_do_not_hash_to_the_subject_is_rejected() -> None:
    manifest = oms.Manifest.build(
        "m", [oms.Resource("a", "sha256", "00" * 32)], oms.Serialization()
    )
    statement = oms.build_statement(manifest)
    statement["predicate"]["resources"][0]["digest"] = "11" * 32
    with pytest.raises(oms.OmsError, match="inconsistent"):
        oms.manifest_from_statement(statement)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"_type": "https://in-toto.io/Statement/v0.1"}, "_type"),
        ({"predicateType": "https://slsa.dev/provenance/v1"}, "predicate type"),
        ({"subject": []}, "no subject"),
    ],
)
def test_statements_that_are_not_oms_are_rejected(change: dict[str, object], message: str) -> None:
    manifest = oms.Manifest.build(
        "m", [oms.Resource("a", "sha256", "00" * 32)], oms.Serialization()
    )
    statement = {**oms.build_statement(manifest), **change}
    with pytest.raises(oms.OmsError, match=message):
        oms.manifest_from_statement(statement)


def test_wrong_payload_type_is_rejected() -> None:
    with pytest.raises(oms.OmsError, match="payload type"):
        oms.statement_from_payload("application/json", b"{}")


def test_v0_2_digests_predicate_is_read_one_subject_per_file() -> None:
    statement = {
        "_type": oms.STATEMENT_TYPE,
        "predicateType": oms.PREDICATE_TYPE_COMPAT,
        "subject": [
            {"name": "b", "digest": {"sha256": "22" * 32}},
            {"name": "a", "digest": {"sha256": "11" * 32}},
        ],
    }
    manifest = oms.manifest_from_statement(statement)
    assert [r.name for r in manifest.resources] == ["a", "b"]
    assert manifest.serialization == oms.Serialization()


def test_shard_size_written_as_float_by_protobuf_is_accepted() -> None:
    serialization = oms.Serialization.from_json(
        {"method": "shards", "hash_type": "sha256", "shard_size": 1e9, "allow_symlinks": False}
    )
    assert serialization.shard_size == 1_000_000_000
    assert serialization.resource_algorithm == "sha256-sharded-1000000000"
    with pytest.raises(oms.OmsError):
        oms.Serialization.from_json({"method": "shards", "hash_type": "sha256", "shard_size": 1.5})
    with pytest.raises(oms.OmsError, match="not supported"):
        oms.Serialization.from_json({"method": "files", "hash_type": "md5"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("sha256:" + "AB" * 32, "ab" * 32), ("cd" * 32, "cd" * 32), (" sha256:" + "0" * 64, "0" * 64)],
)
def test_parse_digest(text: str, expected: str) -> None:
    assert oms.parse_digest(text) == expected


@pytest.mark.parametrize("text", ["sha512:" + "a" * 64, "sha256:abc", "z" * 64, ""])
def test_parse_digest_rejects(text: str) -> None:
    with pytest.raises(oms.OmsError):
        oms.parse_digest(text)


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        (".git/HEAD", True),
        (".git", True),
        (".github/workflows/ci.yml", True),
        (".gitignore", True),
        (".gitattributes", True),
        (".gitfoo", False),
        ("sub/.git/HEAD", False),  # model_signing ignores git paths at the top only
        ("model.safetensors", False),
    ],
)
def test_default_ignore_semantics(name: str, ignored: bool) -> None:
    assert oms.is_ignored(name, oms.DEFAULT_IGNORED_PATHS) is ignored


def test_ignore_paths_are_normalised_and_escapes_dropped() -> None:
    assert oms.is_ignored("a/b/c", ["./a/b/"])
    assert not oms.is_ignored("a/bc", ["a/b"])
    assert not oms.is_ignored("x", ["../x"])


def test_compare_names_each_difference() -> None:
    def manifest(**files: str) -> oms.Manifest:
        resources = [oms.Resource(n, "sha256", d) for n, d in files.items()]
        return oms.Manifest.build("m", resources, oms.Serialization())

    expected = manifest(a="00" * 32, b="11" * 32, c="22" * 32)
    actual = manifest(a="00" * 32, b="33" * 32, d="44" * 32)
    differences = oms.compare(expected, actual)
    assert [(d.kind, d.name) for d in differences] == [
        ("changed", "b"),
        ("missing", "c"),
        ("extra", "d"),
    ]
    assert "b: content changed" in differences[0].message
    assert differences[1].message == "c: missing (signed, but not in the model)"
    assert differences[2].message == "d: extra file (in the model, but not signed)"
    assert oms.compare(expected, expected) == ()


def test_pae_follows_dsse_v1() -> None:
    assert oms.pae(b"{}") == b"DSSEv1 28 application/vnd.in-toto+json 2 {}"
    assert oms.pae_compat(b"{}") == b"DSSEV1 28 application/vnd.in-toto+json 2 b'{}'"


def test_shard_bounds() -> None:
    assert oms.shard_bounds(0, 4) == []
    assert oms.shard_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]


names = st.lists(
    st.text(alphabet="ab.-_/", min_size=1, max_size=8).filter(
        lambda s: not s.startswith("/") and not s.endswith("/") and "//" not in s
    ),
    min_size=1,
    max_size=8,
    unique=True,
)


@given(names, st.binary(min_size=32, max_size=32))
def test_any_manifest_round_trips_through_its_statement(files: list[str], seed: bytes) -> None:
    resources = [
        oms.Resource(name, "sha256", hashlib.sha256(seed + name.encode()).hexdigest())
        for name in files
    ]
    manifest = oms.Manifest.build("m", resources, oms.Serialization())
    parsed = oms.manifest_from_statement(json.loads(json.dumps(oms.build_statement(manifest))))
    assert parsed == manifest
    assert oms.compare(parsed, manifest) == ()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(json_values)
def test_arbitrary_json_is_rejected_cleanly(value: object) -> None:
    statement = {
        "_type": oms.STATEMENT_TYPE,
        "predicateType": oms.PREDICATE_TYPE,
        "subject": [{"name": "m", "digest": {"sha256": "00" * 32}}],
        "predicate": value,
    }
    # Keys of at most five characters can never spell a manifest, so each one is refused, and
    # with OmsError: any other exception escaping is the failure.
    for candidate in (value, statement):
        with pytest.raises(oms.OmsError):
            oms.manifest_from_statement(candidate)
