"""Sigstore bundles as a :class:`muster.signatures.rules.formats.Format`, without loading them.

:mod:`muster.signatures.rules.bundles` imports the ``sigstore`` library (and through it HTTP
clients and Rekor's models); a command that finds no bundle, such as ``muster image verify`` of
an image signed the legacy way, should not pay for that on every start. The fetchers and the
judge name the format through this module; the verifier is imported on the first bundle.
"""

from __future__ import annotations

from muster.signatures.rules import authorities, proofs

__all__ = ["FORMAT", "FORMAT_NAME", "IN_TOTO_PAYLOAD_TYPE", "MAX_BUNDLE_BYTES", "BundleFormat"]

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
FORMAT_NAME = "sigstore-bundle"
MAX_BUNDLE_BYTES = 4 * 1024 * 1024


class BundleFormat:
    """Image bundles (OCI referrers): each verified by :func:`bundles.verify_image`."""

    name = FORMAT_NAME

    def label(self, index: int) -> str:
        return f"bundle {index + 1}"

    def verify(
        self, evidence: object, *, digest: str, authority: authorities.Authority
    ) -> proofs.Proof:
        if not isinstance(evidence, bytes):
            raise proofs.Rejected("evidence is not a bundle")
        from muster.signatures.rules import bundles

        return bundles.verify_image(evidence, digest=digest, authority=authority)


FORMAT = BundleFormat()
