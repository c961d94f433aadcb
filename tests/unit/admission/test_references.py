from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.kernel import references

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
        ("Registry/app", "registry:443", "app", "latest", None),  # uppercase first part = a host
        # One registry, one name: Docker Hub's aliases, the default port, case, a trailing dot.
        ("registry-1.docker.io/alpine", "docker.io", "library/alpine", "latest", None),
        ("docker.io:443/team/app", "docker.io", "team/app", "latest", None),
        ("INDEX.docker.io./team/app", "docker.io", "team/app", "latest", None),
        ("GHCR.io:443/org/app:v1", "ghcr.io", "org/app", "v1", None),
        ("ghcr.io./org/app", "ghcr.io", "org/app", "latest", None),
        ("localhost.:5000/app", "localhost:5000", "app", "latest", None),
        ("[::1]:443/app", "[::1]", "app", "latest", None),
        ("[FE80::1]:5000/app", "[fe80::1]:5000", "app", "latest", None),
        # Other ports and other names stay apart: they may be other registries.
        ("ghcr.io:8443/org/app", "ghcr.io:8443", "org/app", "latest", None),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", None),
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
        ("ghcr.io../app", "not a valid host"),
        ("./app", "not a valid host"),
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
    host=st.sampled_from(["ghcr.io", "localhost:5000", "registry.example:8443", "10.0.0.1"]),
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
        # What Muster writes back (a pinned reference) must name the registry it judged.
        assert references.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "registry"),
    [
        ("registry.:443/team/app", "registry:443"),
        ("registry./team/app", "registry:443"),
        ("REGISTRY/team/app", "registry:443"),
        ("registry:443/team/app", "registry:443"),
        ("localhost./team/app", "localhost"),
    ],
)
def test_a_dotless_registry_keeps_a_spelling_that_still_names_it(text: str, registry: str) -> None:
    """Written bare, ``registry/team/app`` would be Docker Hub's ``registry/team/app``: the
    pinned reference Muster patches into the pod would pull from another registry."""
    parsed = references.parse(text)
    assert parsed.registry == registry
    assert references.parse(str(parsed)).registry == registry


_plain = st.from_regex(r"[a-z0-9]{1,8}([_-][a-z0-9]{1,8}){0,2}", fullmatch=True)  # no host
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
_host = st.builds(
    lambda labels, port: ".".join(labels) + (f":{port}" if port else ""),
    st.lists(_label, min_size=2, max_size=3),
    st.none() | st.sampled_from(["443", "5000", "8443"]),
) | st.builds(  # a dotless host is a host only with its port
    lambda label, port: f"{label}:{port}", _label, st.sampled_from(["443", "5000", "8443"])
)


def _spellings(host: str) -> st.SearchStrategy[str]:
    """Other ways to write ``host`` that reach the same registry."""
    name, _, port = host.partition(":")
    ports = [f":{port}"] if port and port != "443" else ["", ":443"]
    return st.builds(
        lambda upper, dot, suffix: (
            (name.upper() if upper else name) + ("." if dot else "") + suffix
        ),
        st.booleans(),
        st.booleans(),
        st.sampled_from(ports),
    ).filter(lambda spelled: "." in spelled or ":" in spelled or spelled != spelled.lower())
    # (a dotless name written bare, without port, is a Docker Hub namespace, not a host)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), host=_host, path=st.lists(_component, min_size=1, max_size=3))
def test_every_spelling_of_a_registry_parses_to_one_name(
    data: st.DataObject, host: str, path: list[str]
) -> None:
    spelled = data.draw(_spellings(host))
    digest = "sha256:" + "ab" * 32
    one = references.parse(f"{host}/{'/'.join(path)}@{digest}")
    other = references.parse(f"{spelled}/{'/'.join(path)}@{digest}")
    assert other == one
    assert references.normalise_registry(one.registry) == one.registry  # idempotent
    assert not one.registry.endswith(".")
    # The default port is dropped, except from a dotless host, where it is what makes it one.
    name, _, port = one.registry.partition(":")
    assert port != "443" or "." not in name


@settings(max_examples=200, deadline=None)
@given(
    alias=st.sampled_from(["docker.io", "index.docker.io", "registry-1.docker.io"]),
    upper=st.booleans(),
    port=st.booleans(),
    repository=st.lists(_plain, min_size=1, max_size=2),
)
def test_docker_hub_aliases_are_docker_io(
    alias: str, upper: bool, port: bool, repository: list[str]
) -> None:
    host = (alias.upper() if upper else alias) + (":443" if port else "")
    parsed = references.parse(f"{host}/{'/'.join(repository)}")
    assert parsed == references.parse("/".join(repository))
    assert parsed.registry == "docker.io"


@pytest.mark.parametrize(
    ("pattern", "normalised"),
    [
        ("**", "**"),
        ("*/acme/**", "*/acme/**"),
        ("ghcr.io/acme/**", "ghcr.io/acme/**"),
        ("GHCR.IO:443/acme/**", "ghcr.io/acme/**"),
        ("ghcr.io./acme/*", "ghcr.io/acme/*"),
        ("*.Example.COM:443/**", "*.example.com/**"),
        ("index.docker.io/library/*", "docker.io/library/*"),
        ("registry-1.docker.io/nginx", "docker.io/library/nginx"),
        ("nginx", "docker.io/library/nginx"),
        ("team/*", "docker.io/team/*"),
        ("localhost:5000/**", "localhost:5000/**"),
        ("127.0.0.1:5000/**", "127.0.0.1:5000/**"),
    ],
)
def test_patterns_are_normalised_like_references(pattern: str, normalised: str) -> None:
    assert references.normalise_pattern(pattern) == normalised
    assert references.normalise_pattern(normalised) == normalised


@settings(max_examples=200, deadline=None)
@given(data=st.data(), host=_host, path=st.lists(_component, min_size=1, max_size=3))
def test_a_pattern_covers_every_spelling_of_its_registry(
    data: st.DataObject, host: str, path: list[str]
) -> None:
    from muster.images.rules import policies as imagepolicies

    pattern = imagepolicies.compile_glob(f"{data.draw(_spellings(host))}/{path[0]}/**")
    reference = references.parse(f"{data.draw(_spellings(host))}/{'/'.join(path)}/x")
    assert pattern.fullmatch(reference.name)
