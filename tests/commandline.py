"""Run ``muster`` in-process through its real entry point, ``muster.cli.main``.

Tests go through the same parser, dispatch and error reporting as the installed command, so a
subcommand that is not registered, an argument the real parser refuses or an error that the
entry point would print differently fails the test.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from muster import cli

if TYPE_CHECKING:
    from muster.app import runtime

__all__ = ["muster", "run_settings"]


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


def run_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, list[runtime.OperatorSettings]]:
    """Exit code of ``muster run ARGS`` (with a stand-in TLS pair) and the settings it started
    the operator with: none where it refused, the operator's ``run`` being replaced."""
    from muster.app import runtime

    seen: list[runtime.OperatorSettings] = []

    async def fake_run(settings: runtime.OperatorSettings) -> None:
        seen.append(settings)

    monkeypatch.setattr(runtime, "run", fake_run)
    cert = tmp_path / "tls.crt"
    cert.write_text("x")
    code = cli.main(["run", f"--tls-cert-file={cert}", f"--tls-key-file={cert}", *args])
    return code, seen
