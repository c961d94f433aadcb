"""Conventions shared by every subcommand: exit codes, output formats, error reporting."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_OK",
    "CommandError",
    "Handler",
    "Subcommands",
    "add_format_option",
    "emit",
    "lazy",
    "print_error",
]

EXIT_OK = 0  # the thing judged passes
EXIT_FAIL = 1  # policy says no
EXIT_ERROR = 2  # bad input or an error: nothing was judged


class CommandError(Exception):
    """A failure the user can act on; printed as one line, never as a traceback."""


class Subcommands(Protocol):
    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


Handler = Callable[[argparse.Namespace], int]


def lazy(module: str, name: str) -> Handler:
    """The handler ``module.name``, imported only when the command runs.

    Every start builds the whole argument parser; importing each command's implementation
    for it would make ``muster model verify`` (every pod start) pay for all of them."""

    def handler(args: argparse.Namespace) -> int:
        implementation: Handler = getattr(importlib.import_module(module), name)
        return implementation(args)

    return handler


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people (default), json for machines",
    )


def emit(args: argparse.Namespace, text: str, data: object) -> None:
    """Print ``text`` or, with ``--format json``, ``data`` as one JSON document."""
    if getattr(args, "format", "text") == "json":
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_error(args: argparse.Namespace, message: str) -> None:
    if getattr(args, "format", "text") == "json":
        json.dump({"error": message}, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stderr.write(f"muster: error: {message}\n")
