"""A one-line progress report on stderr for long work (hashing a large model).

Shown when stderr is a terminal (and the output is not ``--format json``) or with
``--progress``; never on stdout, so ``--format json`` output stays clean. The line is redrawn at
most a few times a second.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import TextIO

__all__ = ["StderrProgress", "add_option", "for_args"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal, unless --format json)",
    )


def for_args(args: argparse.Namespace, verb: str) -> StderrProgress | None:
    wanted = getattr(args, "progress", None)
    if wanted is None:
        wanted = sys.stderr.isatty() and getattr(args, "format", "text") != "json"
    return StderrProgress(verb) if wanted else None


def human(size: float) -> str:
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class StderrProgress:
    """Thread-safe: hashing workers call :meth:`advance` concurrently."""

    def __init__(self, verb: str, *, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.verb = verb
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.total = 0
        self.files = 0
        self.done = 0
        self._started = time.monotonic()
        self._drawn = float("-inf")
        self._lock = threading.Lock()
        self._finished = False

    def start(self, total_bytes: int, files: int) -> None:
        with self._lock:
            self.total, self.files, self._started = total_bytes, files, time.monotonic()
            self._draw(force=True)

    def advance(self, hashed_bytes: int) -> None:
        with self._lock:
            self.done += hashed_bytes
            self._draw(force=self.done >= self.total)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        percent = 100 * self.done / self.total if self.total else 100.0
        files = f"{self.files} file{'s' if self.files != 1 else ''}"
        return (
            f"{self.verb} {files}: {human(self.done)} / {human(self.total)} "
            f"({percent:.0f}%, {human(self.done / elapsed)}/s)"
        )

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if self._finished or (not force and now - self._drawn < self.interval):
            return
        self._drawn = now
        self._finished = self.done >= self.total
        end = "\n" if self._finished else ""
        self.stream.write(f"\r{self.line()}\x1b[K{end}")
        self.stream.flush()
