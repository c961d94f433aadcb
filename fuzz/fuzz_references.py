"""Image references: ``references.parse``.

Documented error: ``references.InvalidReference``. An accepted reference must round-trip
(``parse(str(ref)) == ref``), so a policy matching on the normalised name sees what the runtime
pulls, and a pinned reference must carry a well-formed digest.
"""

from __future__ import annotations

from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["muster"]):
    from muster.kernel import references

_SEEDS = (
    "nginx",
    "nginx:1.27",
    "library/nginx:latest",
    "docker.io/library/nginx@sha256:" + "0" * 64,
    "ghcr.io/sigstore/cosign/cosign:v2.4.1@sha256:" + "ab" * 32,
    "localhost:5000/team/model:v1",
    "[::1]:5000/repo@sha512:" + "f" * 128,
    "registry.example:443/a/b/c:tag_1.0-rc",
    "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
    "registry./xam/rc",  # found by this harness: a dotless registry must keep naming itself
)


def seeds() -> Iterator[bytes]:
    for text in _SEEDS:
        yield text.encode()


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        parsed = references.parse(text)
    except references.InvalidReference as error:
        _fuzzing.check(bool(str(error)), "InvalidReference without a message")
        return
    again = references.parse(str(parsed))
    _fuzzing.check(again == parsed, f"{text!r} -> {parsed} does not round-trip ({again!r})")
    _fuzzing.check(parsed.registry != "" and parsed.repository != "", f"empty name in {text!r}")
    if parsed.digest is not None:
        algorithm, _, hexpart = parsed.digest.partition(":")
        expected = references.DIGEST_ALGORITHMS.get(algorithm)
        _fuzzing.check(expected == len(hexpart), f"bad digest accepted in {text!r}")
    _fuzzing.check(not any(ch.isspace() for ch in str(parsed)), f"whitespace accepted in {text!r}")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
