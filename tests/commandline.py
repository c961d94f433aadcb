"""Run ``muster`` in-process through its real entry point, ``muster.cli.main``.

Tests go through the same parser, dispatch and error reporting as the installed command, so a
subcommand that is not registered, an argument the real parser refuses or an error that the
entry point would print differently fails the test.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from muster import cli

__all__ = ["muster"]


def muster(*argv: str | Path, stdin: str | None = None) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``muster ARGV`` (with ``stdin`` as its input if given)."""
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    # Text streams over bytes, like the real ones: a command may write to ``sys.stdout.buffer``.
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", write_through=True)
    old = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    try:
        code = cli.main([str(arg) for arg in argv])
    finally:
        sys.stdout, sys.stderr, sys.stdin = old
    return code, out_bytes.getvalue().decode(), err_bytes.getvalue().decode()
