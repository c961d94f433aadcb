"""The real Connaisseur captures, shared with the signature tests."""

from tests.unit.signatures.conftest import keyless_capture, keyless_roots, keyless_trust

__all__ = ["keyless_capture", "keyless_roots", "keyless_trust"]
