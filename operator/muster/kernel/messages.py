"""Turning library exceptions into the one-line messages Muster shows people."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(error: BaseException, *, limit: int = 300) -> str:
    """One line out of a multi-line library message (pydantic names the field on line 2)."""
    lines = []
    for line in str(error).splitlines():
        line = line.split(" [type=")[0].strip()
        if line and not line.startswith("For further information"):
            lines.append(line)
    return (" ".join(lines) or type(error).__name__)[:limit]
