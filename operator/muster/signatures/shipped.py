"""The Sigstore trusted roots shipped inside the ``sigstore`` package, read from disk.

Used when no trusted root is given: the public-good (or staging) root as the installed
``sigstore`` release embeds it. Nothing is fetched, so an air-gapped machine verifies the same
way; a newer or private root is given explicitly and parsed by
:func:`muster.signatures.rules.trust.load_trusted_root`.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["trusted_root"]

_EMBEDDED = {
    False: "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev",
    True: "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev",
}


def trusted_root(*, staging: bool = False) -> bytes:
    """The shipped production (or staging) ``trusted_root.json``; OSError if unreadable."""
    return (
        resources.files("sigstore._store").joinpath(_EMBEDDED[staging], "trusted_root.json")
    ).read_bytes()
