"""Run ``muster check`` in-process, the way ``muster.cli.main`` runs a subcommand."""

from __future__ import annotations

import argparse
import io
import sys

from muster.cli import check, common

__all__ = ["muster_check"]


def muster_check(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``muster check ARGV``."""
    parser = argparse.ArgumentParser(prog="muster")
    check.register(parser.add_subparsers())
    args = parser.parse_args(["check", *argv])
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    try:
        try:
            code = int(args.handler(args))
        except common.CommandError as error:
            common.print_error(args, str(error))
            code = common.EXIT_ERROR
    finally:
        sys.stdout, sys.stderr, sys.stdin = old
    return code, out.getvalue(), err.getvalue()
