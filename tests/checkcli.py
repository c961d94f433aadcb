"""Run ``muster check`` in-process through the real entry point, ``muster.cli.main``."""

from __future__ import annotations

from tests.commandline import muster

__all__ = ["muster_check"]


def muster_check(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``muster check ARGV``."""
    return muster("check", *argv, stdin=stdin)
