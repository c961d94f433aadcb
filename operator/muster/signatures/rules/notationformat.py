"""Notation envelopes as a :class:`muster.signatures.rules.formats.Format`.

The judge hands every format every authority: Notation evidence counts only for a
:class:`~muster.signatures.rules.authorities.NotationAuthority` (and a Notation authority is
inapplicable to cosign's formats), so N of M thresholds count Notation and cosign authorities
together. The clock is read here, at the edge; :func:`muster.signatures.rules.notation.verify`
takes the time as an argument.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from muster.signatures.rules import authorities, notation, proofs

__all__ = ["FORMAT", "NotationFormat"]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class NotationFormat:
    name = notation.FORMAT_NAME

    def __init__(self, clock: Callable[[], datetime.datetime] = _now) -> None:
        self.clock = clock

    def label(self, index: int) -> str:
        return f"Notation signature {index + 1}"

    def verify(
        self, evidence: object, *, digest: str, authority: authorities.Authority
    ) -> proofs.Proof:
        if not isinstance(authority, authorities.NotationAuthority):
            raise proofs.Inapplicable("a Notation signature counts only for Notation authorities")
        if not isinstance(evidence, notation.Envelope):
            raise proofs.Rejected("evidence is not a Notation envelope")
        verified = notation.verify(
            evidence, digest=digest, policy=authority.policy, now=self.clock()
        )
        return verified.proof(authority.name)


FORMAT = NotationFormat()
