"""Shared entry point of the atheris harnesses in this folder.

Each ``fuzz_<target>.py`` defines ``test_one_input(data: bytes) -> None`` and ``seeds()``
(inputs generated in code, added to the working corpus before fuzzing) and ends with
``_fuzzing.main(test_one_input, seeds)``. Any exception escaping ``test_one_input`` is a crash:
the harnesses catch only the parser's documented error type, and raise ``Inconsistent`` when a
parser accepts something it must not.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import atheris  # type: ignore[import-untyped]


class Inconsistent(AssertionError):
    """A parser accepted input in a way that breaks a security invariant."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Inconsistent(message)


def _write_seeds(directory: Path, seeds: Iterable[bytes]) -> None:
    for seed in seeds:
        name = "seed-" + hashlib.sha256(seed).hexdigest()[:16]
        (directory / name).write_bytes(seed)


def main(test_one_input: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]]) -> None:
    """Run libFuzzer over ``test_one_input``; generated seeds go into the first corpus folder."""
    folders = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    if folders and folders[0].is_dir():
        _write_seeds(folders[0], seeds())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
