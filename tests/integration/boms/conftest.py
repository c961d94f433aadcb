from __future__ import annotations

from tests.integration.images.conftest import signers

__all__ = ["signers"]
