"""The ``muster`` command line.

Every command that judges something follows one convention: exit 0 when it passes, 1 when
policy says no, 2 on bad input or an error; human-readable output by default and
``--format json`` for machines. Each area registers its subcommands from its own module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import muster

from . import bom, check, common, dataset, dev, gpu, image, model, nodeagent, run, sigstore

__all__ = ["main"]

_AREAS = (run, dev, check, image, gpu, nodeagent, model, dataset, bom, sigstore)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muster",
        description="Every workload must pass muster: signed images, allowed GPU stacks, "
        "approved models and datasets.",
    )
    parser.add_argument("--version", action="version", version=f"muster {muster.__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        area.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on bad usage already; keep --help at 0
        return int(exit_.code or 0)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return common.EXIT_ERROR
    try:
        return int(handler(args))
    except common.CommandError as error:
        common.print_error(args, str(error))
        return common.EXIT_ERROR
    except KeyboardInterrupt:
        return 130
