"""The pure half of a signature format: verifying evidence it found against an authority.

A format (legacy cosign ``.sig`` manifests, Sigstore bundles, later Notation or in-toto
attestations) is a module with a :class:`Format` object: its ``name``, a ``label`` for the
reason of each piece of evidence, and ``verify``, which returns a
:class:`~muster.signatures.rules.proofs.Proof` or raises
:class:`~muster.signatures.rules.proofs.Rejected`. The evidence itself is whatever the format's
fetcher (``muster.signatures.fetching``) read from a registry; it travels in a
:class:`Found` with its format, so the judge never names a format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from muster.signatures.rules import authorities, proofs

__all__ = ["MAX_PER_FORMAT", "Format", "Found", "attempts"]

# Pieces of evidence considered per artifact and format, against denial of service.
MAX_PER_FORMAT = 16


class Format(Protocol):
    """How one signature format verifies the evidence its fetcher found."""

    @property
    def name(self) -> str: ...

    def label(self, index: int) -> str:
        """What a reason calls the ``index``-th piece of evidence (``bundle 2``)."""
        ...

    def verify(
        self, evidence: object, *, digest: str, authority: authorities.Authority
    ) -> proofs.Proof:
        """A proof that ``authority`` signed ``digest``, or :class:`proofs.Rejected`."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    """The evidence one format found for one digest."""

    format: Format
    items: tuple[object, ...]


def attempts(
    found: Sequence[Found], *, digest: str, authority: authorities.Authority
) -> list[proofs.Proof | proofs.Rejected]:
    """Every piece of evidence verified against ``authority``, each reason labelled."""
    results: list[proofs.Proof | proofs.Rejected] = []
    for evidence in found:
        for index, item in enumerate(evidence.items[:MAX_PER_FORMAT]):
            try:
                results.append(evidence.format.verify(item, digest=digest, authority=authority))
            except proofs.Inapplicable:
                break  # this format never serves this authority: its other items neither
            except proofs.Rejected as error:
                results.append(proofs.Rejected(f"{evidence.format.label(index)}: {error}"))
    return results
