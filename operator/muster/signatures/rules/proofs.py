"""What verifying evidence proved, or why it proved nothing: one vocabulary for every format.

Every signature format (legacy cosign, Sigstore bundles, and the ones to come) answers a
verification with a :class:`Proof` or raises :class:`Rejected` with one readable sentence, so
the policies above them never learn which format vouched for an artifact.
"""

from __future__ import annotations

import dataclasses
import datetime

__all__ = ["CertificateIdentity", "Inapplicable", "Proof", "Rejected"]


class Rejected(ValueError):
    """Evidence that does not count, and the one sentence that says why."""


class Inapplicable(Rejected):
    """Evidence of a format the authority does not speak (a Notation envelope for a cosign key):
    not a failed attempt, so it is left out of the reasons."""


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """Who a Fulcio certificate was issued to: the OIDC issuer and the subject names (SANs)."""

    issuer: str | None
    subjects: tuple[str, ...]

    def __str__(self) -> str:
        subjects = ", ".join(self.subjects) or "no subject"
        return f"{subjects} (issuer {self.issuer or 'unknown'})"


@dataclasses.dataclass(frozen=True, slots=True)
class Proof:
    """Evidence that counts: which format proved which digest, for which authority, by whom.

    ``signer`` is the sentence messages show; ``key_id`` (the SHA-256 of the key's DER) or
    ``identity`` (a certificate's issuer and subjects) say the same for programs. The log
    facts are set when a transparency-log entry was verified.
    """

    digest: str
    signer: str
    authority: str = ""
    format: str = ""
    key_id: str | None = None
    identity: CertificateIdentity | None = None
    docker_reference: str | None = None
    integrated_time: datetime.datetime | None = None
    log_index: int | None = None
    sct_checked: bool = False
    # Failed checks a policy only logs (a Notation ``audit`` level): admitted, with a warning.
    warnings: tuple[str, ...] = ()
