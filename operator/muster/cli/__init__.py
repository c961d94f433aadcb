"""The ``muster`` command line.

Every command that judges something follows one convention: exit 0 when it passes, 1 when
policy says no, 2 on bad input or an error; human-readable output by default and
``--format json`` for machines. Each area registers its subcommands from its own module.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import muster

from . import common

__all__ = ["build_parser", "main"]

# Each command and the module that registers it, in the order ``muster --help`` lists them.
# ``main`` imports only the module of the command it is given: a command starts without
# importing every other area (the verifier init container starts on every pod start).
COMMANDS = {
    "run": "muster.cli.run",
    "dev": "muster.cli.dev",
    "check": "muster.cli.parsers.check",
    "image": "muster.cli.parsers.image",
    "gpu": "muster.cli.gpu",
    "node-agent": "muster.cli.nodeagent",
    "model": "muster.cli.parsers.model",
    "dataset": "muster.cli.dataset",
    "bom": "muster.cli.bom",
    "sigstore": "muster.cli.sigstore",
}


def build_parser(commands: Sequence[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser of ``muster``; with ``commands``, of those top-level commands only."""
    parser = argparse.ArgumentParser(
        prog="muster",
        description="Every workload must pass muster: signed images, allowed GPU stacks, "
        "approved models and datasets.",
    )
    parser.add_argument("--version", action="version", version=f"muster {muster.__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        importlib.import_module(COMMANDS[command]).register(subcommands)
    return parser


def _commands_for(argv: Sequence[str]) -> Sequence[str]:
    """The commands whose parsers ``argv`` can reach: the one it names first, none for
    ``--version`` (which answers before any command), else all (help and usage errors)."""
    first = argv[0] if argv else None
    if first == "--version":
        return ()
    if first in COMMANDS:
        return (first,)
    return tuple(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_commands_for(arguments))
    try:
        args = parser.parse_args(arguments)
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
