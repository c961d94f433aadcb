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
from typing import Protocol

from muster.kernel import references
from muster.platform import registries
from muster.signatures.rules import authorities, formats

__all__ = ["Fetched", "SignatureFormat"]


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
