"""Where tests find the repository and its third-party fixtures."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Real third-party test data, kept in the repository with its provenance and licences.
FIXTURES = REPO / "tests" / "fixtures"


def fixture(*parts: str) -> Path:
    """A path inside tests/fixtures; a missing one is an error, never a skip."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test fixture {path.relative_to(REPO)} is missing")
    return path
