"""Where tests find the repository and the shared third-party fixtures."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The real third-party test data lives beside the checkout (never inside it, never edited).
SHARED_FIXTURES = Path(
    os.environ.get("MUSTER_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures")
)


def shared(*parts: str) -> Path:
    """A path inside the shared fixtures; a missing one is an error, never a skip."""
    path = SHARED_FIXTURES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"shared fixture {path} is missing; set MUSTER_SHARED_FIXTURES")
    return path
