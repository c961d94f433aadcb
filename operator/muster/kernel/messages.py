"""Turning library exceptions into the one-line messages Muster shows people."""

from __future__ import annotations

import pydantic

__all__ = ["first_error", "first_line"]


def first_error(error: Exception) -> str:
    """Why a spec does not validate: pydantic's first error, ``where: what``, else the error."""
    if isinstance(error, pydantic.ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(error)


def first_line(error: BaseException, *, limit: int = 300) -> str:
    """One line out of a multi-line library message (pydantic names the field on line 2)."""
    lines = []
    for line in str(error).splitlines():
        line = line.split(" [type=")[0].strip()
        if line and not line.startswith("For further information"):
            lines.append(line)
    return (" ".join(lines) or type(error).__name__)[:limit]
