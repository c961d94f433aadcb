"""Container image references, parsed the way the container runtime reads them.

The grammar follows the distribution reference package (``docker.io/library/`` defaults, a
first path component that is a registry only when it has a dot, a colon or is ``localhost``).
"""

from __future__ import annotations

import dataclasses
import functools
import re

__all__ = ["DIGEST_ALGORITHMS", "ImageReference", "InvalidReference", "parse"]

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
MAX_REFERENCE_LENGTH = 4096

DIGEST_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN = re.compile(
    r"^(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]{1,5})?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^([a-z0-9]+):([a-f0-9]+)$")


class InvalidReference(ValueError):
    """An image reference that the container runtime would refuse too."""


@dataclasses.dataclass(frozen=True, slots=True)
class ImageReference:
    """A parsed image reference; ``registry`` and ``repository`` are normalised."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> bool:
        """True when the runtime will pull exactly one content-addressed manifest."""
        return self.digest is not None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> ImageReference:
        """The same image pinned to ``digest`` (the tag is kept for readability)."""
        _check_digest(digest)
        return dataclasses.replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _check_digest(digest: str) -> None:
    match = _DIGEST.match(digest)
    if match is None:
        raise InvalidReference(f"digest {digest!r} is not of the form algorithm:hex")
    algorithm, hexpart = match.groups()
    expected = DIGEST_ALGORITHMS.get(algorithm)
    if expected is None:
        raise InvalidReference(f"digest algorithm {algorithm!r} is not supported")
    if len(hexpart) != expected:
        raise InvalidReference(
            f"{algorithm} digest must have {expected} hex characters, not {len(hexpart)}"
        )


def parse(text: str) -> ImageReference:
    """Parse ``text`` as an image reference, or raise :class:`InvalidReference` saying why."""
    if not isinstance(text, str):
        raise InvalidReference(f"image reference must be a string, not {type(text).__name__}")
    return _parse(text)


# Every gate parses every image of every pod; a cluster runs a few thousand distinct images.
# Bounded, and the results are immutable; invalid references are not cached (they raise).
@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> ImageReference:
    if not text:
        raise InvalidReference("image reference is empty")
    if len(text) > MAX_REFERENCE_LENGTH:
        raise InvalidReference(f"image reference is longer than {MAX_REFERENCE_LENGTH} characters")
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidReference(f"image reference {text!r} contains whitespace")

    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        _check_digest(digest)

    tag = None
    last_slash = remainder.rfind("/")
    last_colon = remainder.rfind(":")
    if last_colon > last_slash:
        remainder, tag = remainder[:last_colon], remainder[last_colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference(f"tag {tag!r} in {text!r} is not a valid tag")

    first, _, rest = remainder.partition("/")
    if rest and (
        ("." in first) or (":" in first) or first == "localhost" or first != first.lower()
    ):
        registry, repository = first, rest
        if not _DOMAIN.match(registry):
            raise InvalidReference(f"registry {registry!r} in {text!r} is not a valid host")
    else:
        registry, repository = DEFAULT_REGISTRY, remainder
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or not _REPOSITORY.match(repository):
        raise InvalidReference(f"repository {repository!r} in {text!r} is not a valid name")
    if len(registry) + 1 + len(repository) > 255:
        raise InvalidReference(f"image name in {text!r} is longer than 255 characters")

    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)
