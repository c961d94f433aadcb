"""Pickle scanning: the stream scanner behind ``core.pickles.classify_pickle``.

``adapters.modelfiles._scan_pickle`` runs picklescan and a pickletools walk over the bytes and
lets ``pickles.classify_pickle`` judge them. It answers every input with a verdict, so any
exception is a crash. A ``safe`` verdict must be sound: every import a static ``GLOBAL`` or
``INST`` opcode names is on the allowlist, and the stream parses. Seeds are benign pickles
generated here; no malicious pickle is kept in the corpus.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["muster", "picklescan", "pickletools"]):
    import pickletools

    # modelfiles imports picklescan lazily: import it here so that it is instrumented.
    from picklescan import scanner  # type: ignore[import-untyped]  # noqa: F401

    from muster.models import files as modelfiles
    from muster.models.rules import pickles


def seeds() -> Iterator[bytes]:
    values: list[object] = [
        {"weights": [1.0, 2.5], "name": "layer", "shape": (2,)},
        collections.OrderedDict(a=1, b=b"\x00\x01"),
        [None, True, 3, "x" * 40, {1, 2}],
    ]
    for value in values:
        for protocol in (0, 2, 4, 5):
            yield pickle.dumps(value, protocol=protocol)


def _static_globals(data: bytes) -> list[str]:
    found = []
    try:
        for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if opcode.name in {"GLOBAL", "INST"} and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
    except Exception:  # noqa: S110 - the walk is best effort; the verdict is judged
        pass
    return found


def test_one_input(data: bytes) -> None:
    verdict = modelfiles._scan_pickle(io.BytesIO(data), "fuzz.pkl", ())
    _fuzzing.check(isinstance(verdict.kind, pickles.Kind), "verdict without a kind")
    if verdict.kind is not pickles.Kind.SAFE:
        _fuzzing.check(bool(verdict.reasons), f"{verdict.kind} verdict without a reason")
        return
    for name in _static_globals(data):
        _fuzzing.check(name in pickles.ALLOWED_GLOBALS, f"safe verdict with import {name}")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
