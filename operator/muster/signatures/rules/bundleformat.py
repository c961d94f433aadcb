"""Sigstore bundles as a :class:`muster.signatures.rules.formats.Format`, without loading them.

:mod:`muster.signatures.rules.bundles` imports the ``sigstore`` library (and through it HTTP
clients and Rekor's models); a command that finds no bundle, such as ``muster image verify`` of
an image signed the legacy way, should not pay for that on every start. The fetchers name the
format and its limits through this module and give it the verifier to call, which they import
on the first bundle (``bundles.FORMAT`` is the same format with ``bundles.verify_image``).
"""

from __future__ import annotations

from collections.abc import Callable

from muster.signatures.rules import authorities, proofs

__all__ = ["FORMAT_NAME", "IN_TOTO_PAYLOAD_TYPE", "MAX_BUNDLE_BYTES", "BundleFormat", "Verify"]

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
FORMAT_NAME = "sigstore-bundle"
MAX_BUNDLE_BYTES = 4 * 1024 * 1024

# bundles.verify_image: a bundle's bytes, the image digest and an authority, to a proof.
Verify = Callable[..., proofs.Proof]


class BundleFormat:
    """Image bundles (OCI referrers), each verified by ``verify`` (bundles.verify_image)."""

    name = FORMAT_NAME

    def __init__(self, verify: Verify) -> None:
        self._verify = verify

    def label(self, index: int) -> str:
        return f"bundle {index + 1}"

    def verify(
        self, evidence: object, *, digest: str, authority: authorities.Authority
    ) -> proofs.Proof:
        if not isinstance(evidence, bytes):
            raise proofs.Rejected("evidence is not a bundle")
        return self._verify(evidence, digest=digest, authority=authority)
