"""Safetensors headers: ``pickles.check_safetensors`` (and ``.npy`` headers, ``npy_header``).

The input is a whole file. ``check_safetensors`` answers every input with a verdict, so any
exception is a crash; ``npy_header`` documents ``ValueError``. A file judged ``safe`` has a
JSON header whose tensors lie inside the file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["muster"]):
    from muster.models.rules import pickles


def _safetensors(header: dict[str, object], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def seeds() -> Iterator[bytes]:
    yield _safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    yield _safetensors({"__metadata__": {"format": "pt"}}, b"")
    yield b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"


def test_one_input(data: bytes) -> None:
    prefix = data[:8]
    length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
    header = data[8 : 8 + min(length, pickles.MAX_SAFETENSORS_HEADER)]
    verdict = pickles.check_safetensors("fuzz.safetensors", prefix, header, len(data))
    if verdict.kind is pickles.Kind.SAFE:
        document = json.loads(header)
        _fuzzing.check(isinstance(document, dict), "safe safetensors header is not an object")
        body = len(data) - 8 - length
        for name, info in document.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            _fuzzing.check(0 <= start <= end <= body, f"tensor {name!r} lies outside the file")
    else:
        _fuzzing.check(bool(verdict.reasons), "malformed verdict without a reason")
    try:
        offset, _has_object = pickles.npy_header(data)
    except ValueError:
        return
    _fuzzing.check(0 < offset <= len(data), f"npy data offset {offset} outside the file")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
