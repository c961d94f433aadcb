"""The signature formats the image gate looks for, in the order it asks the registry.

Bundles come first: cosign v3 writes them, and when they satisfy a policy the legacy ``.sig``
lookup is never made. A new format is one fetcher module (and its pure verifier in ``rules/``)
plus one line here.
"""

from __future__ import annotations

from muster.signatures import fetching, legacysigs, notationsigs, referrers

__all__ = ["FORMATS"]

# Notation signatures are asked for only by policies with a Notation authority (``serves``).
FORMATS: tuple[fetching.SignatureFormat, ...] = (
    referrers.FORMAT,
    notationsigs.FORMAT,
    legacysigs.FORMAT,
)
