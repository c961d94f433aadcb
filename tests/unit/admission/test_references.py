from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.core import references

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.27", "docker.io", "library/nginx", "1.27", None),
        ("team/app", "docker.io", "team/app", "latest", None),
        ("index.docker.io/team/app:v1", "docker.io", "team/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", "latest", None),
        ("ghcr.io/org/app@" + DIGEST, "ghcr.io", "org/app", None, DIGEST),
        ("ghcr.io/org/app:v1@" + DIGEST, "ghcr.io", "org/app", "v1", DIGEST),
        ("Registry/app", "Registry", "app", "latest", None),  # uppercase first part = a host
        (
            "nvcr.io/nvidia/cuda:12.8.1-base-ubuntu24.04",
            "nvcr.io",
            "nvidia/cuda",
            "12.8.1-base-ubuntu24.04",
            None,
        ),
    ],
)
def test_parse_normalises_like_the_runtime(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    parsed = references.parse(text)
    assert (parsed.registry, parsed.repository, parsed.tag, parsed.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert parsed.pinned is (digest is not None)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        ("nginx:", "tag"),
        ("nginx@sha256:abc", "64 hex"),
        ("nginx@md5:" + "a" * 32, "not supported"),
        ("nginx@sha256:" + "A" * 64, "algorithm:hex"),
        ("Nginx", "repository"),
        ("bad ref", "whitespace"),
        ("a" * 5000, "longer than"),
        ("ghcr.io/", "repository"),
        ("ghcr.io//app", "repository"),
        ("-host.io/app", "not a valid host"),
    ],
)
def test_invalid_references_say_why(text: str, complaint: str) -> None:
    with pytest.raises(references.InvalidReference, match=complaint):
        references.parse(text)


def test_with_digest_pins_and_keeps_the_tag() -> None:
    pinned = references.parse("ghcr.io/org/app:v1").with_digest(DIGEST)
    assert str(pinned) == f"ghcr.io/org/app:v1@{DIGEST}"
    with pytest.raises(references.InvalidReference):
        references.parse("app").with_digest("sha256:short")


_component = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_hex = st.text("0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=200, deadline=None)
@given(
    host=st.sampled_from(["ghcr.io", "localhost:5000", "registry.example:443", "10.0.0.1"]),
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
    digest=st.none() | _hex,
)
def test_round_trip(host: str, path: list[str], tag: str | None, digest: str | None) -> None:
    text = f"{host}/{'/'.join(path)}"
    if tag:
        text += f":{tag}"
    if digest:
        text += f"@sha256:{digest}"
    parsed = references.parse(text)
    assert parsed.registry == host
    assert parsed.repository == "/".join(path)
    assert references.parse(str(parsed)) == parsed
    assert parsed.pinned is (digest is not None)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parsed = references.parse(text)
    except references.InvalidReference as error:
        assert str(error)
    else:
        assert parsed.repository
