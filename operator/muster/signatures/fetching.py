"""The I/O half of a signature format: finding its evidence for a digest on a registry.

A format's fetcher reads what the registry holds about one digest (``.sig`` manifests, OCI
referrers, ...) through :mod:`muster.platform.registries` and hands back a :class:`Fetched`:
the evidence, tagged with the pure :class:`~muster.signatures.rules.formats.Format` that will
verify it, and the artifacts that were there but could not be read. Registry trouble that
makes the answer unknowable (unavailable, unauthorized) is raised as a ``RegistryError``:
the caller refuses what it could not check. :mod:`muster.signatures.registered` lists the
fetchers the image gate asks, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from muster.kernel import references
from muster.platform import registries
from muster.signatures.rules import authorities, formats

__all__ = [
    "Fetched",
    "Referrer",
    "RegistryFormat",
    "SignatureFormat",
    "read_referrer",
    "unreadable",
]

ItemT = TypeVar("ItemT")
# Reads one format's evidence for a digest: the items, and the artifacts it could not read.
Reader = Callable[
    [registries.RegistryClient, references.ImageReference, str],
    Awaitable[tuple[tuple[ItemT, ...], tuple[str, ...]]],
]


@dataclasses.dataclass(frozen=True, slots=True)
class Fetched:
    """What one format found for one digest, and what it found but could not read."""

    found: formats.Found
    problems: tuple[str, ...] = ()


class SignatureFormat(Protocol):
    """A format the image gate looks for on registries."""

    @property
    def format(self) -> formats.Format: ...

    def serves(self, authority: authorities.Authority) -> bool:
        """Whether this format's evidence can count for ``authority`` (else it is not fetched
        for a policy without such authorities)."""
        ...

    async def fetch(
        self,
        client: registries.RegistryClient,
        reference: references.ImageReference,
        digest: str,
    ) -> Fetched:
        """The evidence for ``digest`` in the repository; RegistryError if unknowable."""
        ...


@dataclasses.dataclass(frozen=True)
class RegistryFormat(Generic[ItemT]):
    """A :class:`SignatureFormat` whose evidence ``read`` finds on the registry."""

    format: formats.Format
    read: Reader[ItemT]
    # Notation evidence counts only for Notation authorities, every other format's only for
    # the others: a format is not fetched for a policy none of whose authorities it serves.
    notation: bool = False

    def serves(self, authority: authorities.Authority) -> bool:
        return isinstance(authority, authorities.NotationAuthority) == self.notation

    async def fetch(
        self,
        client: registries.RegistryClient,
        reference: references.ImageReference,
        digest: str,
    ) -> Fetched:
        found, problems = await self.read(client, reference, digest)
        return Fetched(formats.Found(self.format, found), problems)


def unreadable(error: Exception, what: str) -> str:
    """The problem an artifact that could not be read is; registry trouble that makes the whole
    answer unknowable (unavailable, unauthorized) is raised for the caller to refuse on."""
    if isinstance(error, registries.Unavailable | registries.Unauthorized):
        raise error
    return f"{what}: {error}"


@dataclasses.dataclass(frozen=True, slots=True)
class Referrer:
    """A referrer manifest that names the image as its subject and holds one wanted layer."""

    document: Mapping[str, Any]
    layer: Mapping[str, Any]  # its one layer, with a str mediaType and digest


async def read_referrer(
    client: registries.RegistryClient,
    reference: references.ImageReference,
    digest: str,
    manifest_digest: str,
    *,
    layer_type: Callable[[object], bool],
) -> Referrer | str | None:
    """The referrer ``manifest_digest`` of ``digest``; a problem (a sentence) when it names
    another subject; None when it is not one layer of a ``layer_type`` (another kind of
    referrer, for the caller to skip or report). Registry errors are raised."""
    manifest = await client.manifest(reference.registry, reference.repository, manifest_digest)
    document = manifest.json()
    subject = document.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != digest:
        return "does not name the image as its subject"
    layers = document.get("layers")
    if (
        not isinstance(layers, list)
        or len(layers) != 1
        or not isinstance(layers[0], dict)
        or not layer_type(layers[0].get("mediaType"))
        or not isinstance(layers[0].get("digest"), str)
    ):
        return None
    return Referrer(document, layers[0])
