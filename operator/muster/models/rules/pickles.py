"""Judging serialized model files: pickle imports, safetensors headers, Keras Lambda layers.

picklescan finds the globals a pickle imports and flags the ones on its blocklist; a
blocklist is bypassable, so Muster also keeps an allowlist: a global that is neither
dangerous nor allowed is still unsafe. The adapter walks files and feeds the facts
(imports, whether the opcode stream parsed, whether a call ran before a parse error) to
the pure functions here, which decide.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import json
import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ALLOWED_GLOBALS",
    "CALL_OPCODES",
    "MAX_SAFETENSORS_HEADER",
    "FileVerdict",
    "Import",
    "Kind",
    "Report",
    "check_safetensors",
    "classify_pickle",
    "keras_lambda_layers",
    "npy_header",
    "safetensors_header_length",
]


class Kind(enum.StrEnum):
    """What a file is found to be. Only ``safe`` and ``not-pickle`` pass."""

    SAFE = "safe"
    UNSAFE = "unsafe"  # imports something dangerous or not on the allowlist
    MALFORMED = "malformed"  # claims a format but does not parse; fail closed
    NOT_PICKLE = "not-pickle"  # nothing could be imported or called from it
    UNSCANNABLE = "unscannable"  # encrypted, over a limit, or a container Muster cannot open

    @property
    def passes(self) -> bool:
        return self in (Kind.SAFE, Kind.NOT_PICKLE)


# Globals that legitimate PyTorch / NumPy / scikit checkpoints import and that cannot run
# code by themselves (close to torch's weights_only allowlist). ``module.name``.
_TORCH_STORAGES = [
    "BFloat16Storage",
    "BoolStorage",
    "ByteStorage",
    "CharStorage",
    "ComplexDoubleStorage",
    "ComplexFloatStorage",
    "DoubleStorage",
    "FloatStorage",
    "HalfStorage",
    "IntStorage",
    "LongStorage",
    "QInt32Storage",
    "QInt8Storage",
    "QUInt2x4Storage",
    "QUInt4x2Storage",
    "QUInt8Storage",
    "ShortStorage",
]
_TORCH_DTYPES = [
    "bfloat16",
    "bool",
    "complex128",
    "complex64",
    "float16",
    "float32",
    "float64",
    "float8_e4m3fn",
    "float8_e5m2",
    "half",
    "int16",
    "int32",
    "int64",
    "int8",
    "uint8",
]
_PLAIN_TYPES = ("set", "frozenset", "bytearray", "slice", "complex")
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    [
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.Size",
        "torch.device",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "_codecs.encode",  # how protocol-2 pickles carry bytes; returns bytes only
        *(f"torch.{name}" for name in _TORCH_STORAGES),
        *(f"torch.{name}" for name in _TORCH_DTYPES),
        *(f"{mod}.{name}" for mod in ("builtins", "__builtin__") for name in _PLAIN_TYPES),
    ]
)
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors format's own limit

# Opcodes that call something: a global imported before a parse error only ran if one of
# these followed it.
CALL_OPCODES = frozenset({"REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})

_SAFETENSORS_DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Import:
    """One global a pickle imports, with picklescan's opinion of it."""

    module: str
    name: str
    dangerous: bool = False  # on picklescan's blocklist (or unresolvable)

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class FileVerdict:
    """The judgement of one file (or archive member, ``archive:member``)."""

    path: str
    kind: Kind
    reasons: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()

    @property
    def passes(self) -> bool:
        return self.kind.passes

    @property
    def message(self) -> str:
        why = "; ".join(self.reasons) if self.reasons else self.kind.value
        return f"{self.path}: {why}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind.value,
            "passes": self.passes,
            "reasons": list(self.reasons),
            "imports": list(self.imports),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """Every file judged in a model; the model passes when every file does."""

    files: tuple[FileVerdict, ...]

    @property
    def passes(self) -> bool:
        return all(f.passes for f in self.files)

    @property
    def failures(self) -> tuple[FileVerdict, ...]:
        return tuple(f for f in self.files if not f.passes)


def classify_pickle(
    path: str,
    imports: Iterable[Import],
    *,
    parse_error: str | None = None,
    called_before_error: bool = True,
    allowed: Iterable[str] = (),
) -> FileVerdict:
    """Judge a pickle stream from its imports and how far its opcodes parsed.

    ``called_before_error`` says whether a call opcode ran before the parse error; when
    none did, the imports were never invoked and the file is malformed, not unsafe.
    """
    allow = ALLOWED_GLOBALS | frozenset(allowed)
    found = sorted({str(i): i for i in imports}.values(), key=str)
    names = tuple(str(i) for i in found)
    bad: list[str] = []
    for item in found:
        if item.dangerous:
            bad.append(f"dangerous import {item}")
        elif str(item) not in allow:
            bad.append(f"import {item} is not on the allowlist")
    if parse_error is None:
        if bad:
            return FileVerdict(path, Kind.UNSAFE, tuple(bad), names)
        return FileVerdict(path, Kind.SAFE, (), names)
    if bad and called_before_error:
        return FileVerdict(path, Kind.UNSAFE, (*bad, f"then: {parse_error}"), names)
    if not found:
        return FileVerdict(path, Kind.NOT_PICKLE, (f"not a pickle ({parse_error})",), names)
    return FileVerdict(
        path,
        Kind.MALFORMED,
        (f"malformed pickle after importing {', '.join(names)}: {parse_error}",),
        names,
    )


def check_safetensors(path: str, prefix: bytes, header: bytes, file_size: int) -> FileVerdict:
    """Validate a safetensors file from its 8-byte length, its header and its size."""
    problems = _safetensors_problems(prefix, header, file_size)
    if problems:
        return FileVerdict(path, Kind.MALFORMED, (f"invalid safetensors: {problems}",))
    return FileVerdict(path, Kind.SAFE)


def safetensors_header_length(prefix: bytes) -> int:
    if len(prefix) != 8:
        raise ValueError("file is shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix)
    return int(length)


def _safetensors_problems(prefix: bytes, header: bytes, file_size: int) -> str | None:
    try:
        length = safetensors_header_length(prefix)
    except ValueError as error:
        return str(error)
    if length > MAX_SAFETENSORS_HEADER:
        return f"header length {length} exceeds {MAX_SAFETENSORS_HEADER} bytes"
    if 8 + length > file_size or len(header) != length:
        return f"header length {length} runs past the end of the file"
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"header is not UTF-8 JSON ({error})"
    if not isinstance(parsed, dict):
        return "header is not a JSON object"
    buffer = file_size - 8 - length
    spans: list[tuple[int, int, str]] = []
    for name, info in parsed.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in info.items()
            ):
                return "__metadata__ is not a map of strings"
            continue
        problem = _tensor_problem(name, info)
        if problem:
            return problem
        begin, end = info["data_offsets"]
        spans.append((begin, end, name))
    cursor = 0
    for begin, end, name in sorted(spans):
        if begin != cursor:
            return f"tensor {name!r} starts at {begin}, expected {cursor} (gap or overlap)"
        cursor = end
    if cursor != buffer:
        return f"tensors cover {cursor} bytes but the data buffer holds {buffer}"
    return None


def _tensor_problem(name: str, info: object) -> str | None:
    if not isinstance(info, dict):
        return f"tensor {name!r} is not an object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPE_BITS:
        return f"tensor {name!r} has unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return f"tensor {name!r} has an invalid shape"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[1] < offsets[0]
    ):
        return f"tensor {name!r} has invalid data_offsets"
    bits = math.prod(shape) * _SAFETENSORS_DTYPE_BITS[str(dtype)]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        return (
            f"tensor {name!r} spans {offsets[1] - offsets[0]} bytes, its shape needs {bits / 8:g}"
        )
    return None


def npy_header(prefix: bytes) -> tuple[int, bool]:
    """``(data offset, holds objects)`` of a ``.npy`` file from its first bytes.

    Object arrays store a pickle after the header; plain arrays are raw numbers.
    Raises ``ValueError`` when the header is not valid.
    """
    if not prefix.startswith(b"\x93NUMPY") or len(prefix) < 10:
        raise ValueError("not a .npy file")
    major = prefix[6]
    if major == 1:
        (length,) = struct.unpack("<H", prefix[8:10])
        start = 10
    elif major in (2, 3):
        if len(prefix) < 12:
            raise ValueError("truncated .npy header")
        (length,) = struct.unpack("<I", prefix[8:12])
        start = 12
    else:
        raise ValueError(f"unsupported .npy version {major}")
    end = start + length
    if len(prefix) < end:
        raise ValueError("truncated .npy header")
    try:
        header = ast.literal_eval(prefix[start:end].decode("latin1"))
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"invalid .npy header ({error})") from None
    if not isinstance(header, dict) or "descr" not in header:
        raise ValueError("invalid .npy header (no descr)")
    return end, _descr_has_object(header["descr"])


def _descr_has_object(descr: object) -> bool:
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list | tuple):
        return any(_descr_has_object(part) for part in descr)
    return False


def keras_lambda_layers(config: object) -> list[str]:
    """Names of Keras ``Lambda`` layers (they carry marshalled Python code) in a config."""
    found: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                inner = node.get("config")
                name = inner.get("name") if isinstance(inner, dict) else None
                found.append(str(name or "unnamed"))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    return found
