"""Container image references, parsed the way the container runtime reads them.

The grammar follows the distribution reference package (``docker.io/library/`` defaults, a
first path component that is a registry only when it has a dot, a colon or is ``localhost``).

Registry host names are normalised (:func:`normalise_registry`) before anything compares them,
so one registry has one name: ``index.docker.io`` and ``registry-1.docker.io`` are
``docker.io``, the default port ``:443`` is dropped, letters are lower case and a trailing dot
is removed. ImagePolicy patterns go through the same normalisation (:func:`normalise_pattern`).
Names that reach the same registry by other routes (``localhost:5000`` and ``127.0.0.1:5000``)
cannot be told apart without the network: they stay distinct, and an image under a name no
policy covers is refused for that (see ``muster.images.rules.policies``).
"""

from __future__ import annotations

import dataclasses
import functools
import re

__all__ = [
    "DIGEST_ALGORITHMS",
    "ImageReference",
    "InvalidReference",
    "normalise_pattern",
    "normalise_registry",
    "parse",
]

DEFAULT_REGISTRY = "docker.io"
# Other names of Docker Hub: the same registry, so the same policies.
DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})
DEFAULT_PORT = "443"  # registries are spoken to over HTTPS: host:443 is host
DEFAULT_TAG = "latest"
MAX_REFERENCE_LENGTH = 4096

DIGEST_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
# A trailing dot (a fully qualified name) is accepted and then normalised away.
_DOMAIN = re.compile(
    r"^(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*\.?)(?::[0-9]{1,5})?$"
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


def normalise_registry(host: str) -> str:
    """One name per registry: lower case, no trailing dot, no default port, Docker Hub's aliases
    as ``docker.io``. ``host`` is ``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``; it is not checked
    here (the parser does that), so patterns with glob characters pass through too."""
    name, port = host.lower(), None
    bracket = name.rfind("]")
    colon = name.rfind(":")
    if colon > bracket and (bracket != -1 or name.count(":") == 1):
        name, port = name[:colon], name[colon + 1 :]
    if name.endswith(".") and name != ".":
        name = name[:-1]
    if name in DOCKER_HUB_ALIASES:
        name = DEFAULT_REGISTRY
    if port == DEFAULT_PORT:
        port = None
    if port is None and name and not _is_host(name) and not any(ch in name for ch in "*?["):
        # A dotless host (`registry.:443/x`, `REGISTRY/x`) written bare would read as a Docker
        # Hub namespace, so a pinned reference Muster writes back would pull from elsewhere:
        # it keeps its default port, the one spelling that still names it.
        port = DEFAULT_PORT
    return name if port is None else f"{name}:{port}"


def _is_host(first: str) -> bool:
    """Whether the first path component names a registry (distribution's rule)."""
    return "." in first or ":" in first or first == "localhost" or first != first.lower()


def normalise_pattern(pattern: str) -> str:
    """An ImagePolicy glob read the way image references are: its registry part normalised, and
    a pattern without a registry on Docker Hub (``nginx`` is ``docker.io/library/nginx``,
    ``team/*`` is ``docker.io/team/*``). A first part with glob characters (``**``,
    ``*.example.com``) may match any registry: only its case, trailing dot and port are
    normalised."""
    first, slash, rest = pattern.partition("/")
    wild = any(ch in first for ch in "*?")
    if not slash:
        # A name always has a slash: such a pattern only makes sense as one repository.
        if wild or _is_host(first):
            return pattern
        return f"{DEFAULT_REGISTRY}/library/{pattern}"
    if wild:
        return f"{normalise_registry(first)}/{rest}"
    if not _is_host(first):
        return f"{DEFAULT_REGISTRY}/{pattern}"
    registry = normalise_registry(first)
    if registry == DEFAULT_REGISTRY and "/" not in rest and not any(ch in rest for ch in "*?"):
        rest = f"library/{rest}"
    return f"{registry}/{rest}"


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
    if rest and _is_host(first):
        if not _DOMAIN.match(first):
            raise InvalidReference(f"registry {first!r} in {text!r} is not a valid host")
        registry, repository = normalise_registry(first), rest
    else:
        registry, repository = DEFAULT_REGISTRY, remainder
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or not _REPOSITORY.match(repository):
        raise InvalidReference(f"repository {repository!r} in {text!r} is not a valid name")
    if len(registry) + 1 + len(repository) > 255:
        raise InvalidReference(f"image name in {text!r} is longer than 255 characters")

    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)
