"""Model bytes on disk: walk a model safely, hash it in parallel, verify it, scan it.

Hashing reads each file in large chunks into one reusable buffer per worker, so memory
stays at ``workers x chunk`` whatever the model size; ``hashlib`` and ``blake3`` release the
GIL, so a thread pool uses every core. The manifest is ``model_signing``-compatible (see
``muster.signatures.rules.oms``); the digest of a model is the same number ``model_signing`` signs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import pickletools
import stat
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import blake3

from muster.models.rules import defaults, pickles
from muster.signatures.rules import oms

if TYPE_CHECKING:  # imported when a signature is verified: measuring needs no Sigstore
    from muster.signatures import oms as modelsigs

__all__ = [
    "DEFAULT_WORKERS",
    "Limits",
    "ModelError",
    "Outcome",
    "Progress",
    "hash_file",
    "ignore_paths_for",
    "measure",
    "scan",
    "scan_file",
    "verify_digest",
    "verify_signature",
    "walk",
]

DEFAULT_WORKERS = defaults.DEFAULT_WORKERS  # files hashed in parallel
_CHUNK = 4 << 20  # large reads keep syscalls rare; memory is workers x chunk

_PICKLE_SUFFIXES = frozenset(
    {".pkl", ".pickle", ".joblib", ".dat", ".data", ".pt", ".pth", ".bin", ".ckpt"}
)
_ZIP_SUFFIXES = frozenset({".zip", ".npz", ".pt", ".pth", ".bin", ".ckpt", ".keras", ".mar"})
_PICKLE_MAGIC = tuple(bytes([0x80, v]) for v in range(2, 6))
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
_NPY_MAGIC = b"\x93NUMPY"
_DEFAULT_SERIALIZATION = oms.Serialization()  # model_signing's default: files, sha256


class ModelError(Exception):
    """The model cannot be measured (a bad symlink, a special file...); names the file."""


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on archive inspection, so a zip bomb costs a refusal, not the node."""

    max_entries: int = 100_000
    max_member_bytes: int = 1 << 30  # one pickle inside an archive, decompressed
    max_total_bytes: int = 4 << 30  # everything decompressed from one archive
    max_npy_header: int = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The result of verifying model bytes: passes when there is no difference."""

    measured: oms.Manifest
    expected_digest: str
    differences: tuple[oms.Difference, ...] = ()
    signer: str | None = None

    @property
    def passes(self) -> bool:
        return not self.differences and self.measured.digest == self.expected_digest

    def to_json(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "digest": self.measured.digest,
            "expected": self.expected_digest,
            "signer": self.signer,
            "differences": [d.to_json() for d in self.differences],
        }


# -- walking -------------------------------------------------------------------------


def walk(
    root: Path,
    ignore_paths: Iterable[str] = oms.DEFAULT_IGNORED_PATHS,
    *,
    allow_symlinks: bool = False,
) -> list[tuple[str, Path]]:
    """Every file of the model as ``(POSIX name relative to root, path to read)``.

    A single-file model is named ``.`` (as model_signing names it). Symlinks are refused
    unless ``allow_symlinks``, and even then one that leaves the model or loops is
    refused; devices, FIFOs and sockets are always refused.
    """
    ignores = tuple(ignore_paths)
    try:
        top = root.lstat()
    except OSError as error:
        raise ModelError(f"{root}: cannot read ({error.strerror})") from None
    if stat.S_ISLNK(top.st_mode):
        raise ModelError(f"{root}: the model path itself is a symlink; give its target")
    if stat.S_ISREG(top.st_mode):
        return [(".", root)]
    if not stat.S_ISDIR(top.st_mode):
        raise ModelError(f"{root}: not a regular file or directory")
    real_root = root.resolve()
    found: list[tuple[str, Path]] = []
    _walk_dir(root, "", real_root, ignores, allow_symlinks, found, set())
    return found


def _walk_dir(
    directory: Path,
    prefix: str,
    real_root: Path,
    ignores: tuple[str, ...],
    allow_symlinks: bool,
    found: list[tuple[str, Path]],
    seen: set[tuple[int, int]],
) -> None:
    try:
        info = directory.stat()
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as error:
        raise ModelError(f"{directory}: cannot list ({error.strerror})") from None
    key = (info.st_dev, info.st_ino)
    if key in seen:  # a directory reached twice through symlinks
        raise ModelError(f"{directory}: symlink loop")
    seen = seen | {key}
    for entry in entries:
        name = f"{prefix}{entry.name}"
        if oms.is_ignored(name, ignores):
            continue
        path = Path(entry.path)
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError as error:
            raise ModelError(f"{name}: cannot read ({error.strerror})") from None
        if stat.S_ISLNK(mode):
            mode = _check_symlink(path, name, real_root, allow_symlinks)
        if stat.S_ISDIR(mode):
            _walk_dir(path, f"{name}/", real_root, ignores, allow_symlinks, found, seen)
        elif stat.S_ISREG(mode):
            found.append((name, path))
        else:
            raise ModelError(f"{name}: {_kind(mode)} cannot be part of a model")


def _check_symlink(path: Path, name: str, real_root: Path, allow_symlinks: bool) -> int:
    try:
        target = path.resolve(strict=True)
    except RuntimeError:
        raise ModelError(f"{name}: symlink loop") from None
    except OSError as error:
        if error.errno == 40:  # ELOOP
            raise ModelError(f"{name}: symlink loop") from None
        raise ModelError(f"{name}: broken symlink to {os.readlink(path)}") from None
    if not target.is_relative_to(real_root):
        raise ModelError(f"{name}: symlink escapes the model directory (points to {target})")
    if not allow_symlinks:
        raise ModelError(
            f"{name}: is a symlink; the signature does not allow symlinks (allow_symlinks=false)"
        )
    return target.stat().st_mode


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "a special file"


# -- hashing -------------------------------------------------------------------------


def hash_file(
    path: Path,
    algorithm: str = "sha256",
    start: int = 0,
    end: int | None = None,
    *,
    chunk: int = _CHUNK,
    advance: Callable[[int], None] | None = None,
) -> str:
    """Hex digest of ``path[start:end]``, read in chunks into one reused buffer.

    ``advance`` (when given) is told the size of every chunk hashed, from the hashing thread.
    """
    hasher = _hasher(algorithm)
    view = _buffer(chunk)
    remaining = None if end is None else end - start
    with path.open("rb", buffering=0) as handle:
        if start:
            handle.seek(start)
        while remaining is None or remaining > 0:
            want = chunk if remaining is None else min(chunk, remaining)
            got = handle.readinto(view[:want])
            if not got:
                break
            hasher.update(view[:got])
            if advance is not None:
                advance(got)
            if remaining is not None:
                remaining -= got
    return hasher.hexdigest()


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def _hasher(algorithm: str) -> _Hasher:
    """A streaming hasher for an OMS algorithm (sha256, blake2b, blake3)."""
    if algorithm == "blake3":
        # The Rust binding spreads one large update over every core (as model_signing's
        # blake3 hashing does), so one big weights file is not hashed on a single core.
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    return hashlib.new(algorithm)


_buffers = threading.local()


def _buffer(size: int) -> memoryview:
    # One buffer per thread, reused for every file: allocating (and zeroing) megabytes
    # per small file would cost more than hashing it.
    current: memoryview | None = getattr(_buffers, "view", None)
    if current is None or len(current) < size:
        current = memoryview(bytearray(size))
        _buffers.view = current
    return current[:size]


class Progress(Protocol):
    """Told how much hashing there is, then of every chunk hashed (from worker threads)."""

    def start(self, total_bytes: int, files: int) -> None: ...

    def advance(self, hashed_bytes: int) -> None: ...


def measure(
    root: Path,
    serialization: oms.Serialization = _DEFAULT_SERIALIZATION,
    *,
    extra_ignores: Sequence[str] = (),
    ignore_git_paths: bool = True,
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
) -> oms.Manifest:
    """The OMS manifest of the model at ``root`` as it is on disk now.

    ``progress`` (when given) learns the total bytes to hash, then each chunk as it is hashed.
    """
    ignores = [*serialization.ignore_paths, *extra_ignores]
    if ignore_git_paths:
        ignores.extend(oms.DEFAULT_IGNORED_PATHS)
    files = walk(root, ignores, allow_symlinks=serialization.allow_symlinks)
    jobs: list[tuple[str, Path, int, int | None]] = []
    for name, path in files:
        if serialization.method == "shards":
            size = path.stat().st_size
            for start, end in oms.shard_bounds(size, serialization.shard_size or size or 1):
                jobs.append((f"{name}:{start}:{end}", path, start, end))
        else:
            jobs.append((name, path, 0, None))
    algorithm = serialization.algorithm
    advance = None
    if progress is not None:
        try:
            total = sum(
                (end if end is not None else path.stat().st_size) - start
                for _, path, start, end in jobs
            )
        except OSError as error:
            raise ModelError(f"cannot read {error.filename} ({error.strerror})") from None
        progress.start(total, len(files))
        advance = progress.advance

    def run(job: tuple[str, Path, int, int | None]) -> oms.Resource:
        name, path, start, end = job
        try:
            digest = hash_file(path, algorithm, start, end, advance=advance)
        except OSError as error:
            raise ModelError(f"{name}: cannot read ({error.strerror})") from None
        return oms.Resource(name, serialization.resource_algorithm, digest)

    resources = _run_bounded(run, jobs, max(1, workers))
    model_name = root.name or os.path.basename(root.resolve())
    return oms.Manifest.build(model_name, resources, serialization)


def _run_bounded(
    run: Callable[[tuple[str, Path, int, int | None]], oms.Resource],
    jobs: Sequence[tuple[str, Path, int, int | None]],
    workers: int,
) -> list[oms.Resource]:
    """Hash with ``workers`` threads, keeping only a few jobs queued per thread.

    Submitting a million files at once would hold a million futures; a sliding window
    keeps memory flat and every thread busy (a big file does not stall a batch).
    """
    window = workers * 4
    results: list[oms.Resource] = []
    pending: set[concurrent.futures.Future[oms.Resource]] = set()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for job in jobs:
                if len(pending) >= window:
                    done, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    results.extend(future.result() for future in done)
                pending.add(pool.submit(run, job))
            results.extend(future.result() for future in concurrent.futures.as_completed(pending))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results


def verify_digest(root: Path, expected: str, *, workers: int = DEFAULT_WORKERS) -> Outcome:
    """Measure with model_signing's defaults and compare the root digest."""
    measured = measure(root, workers=workers)
    return Outcome(measured, oms.format_digest(oms.parse_digest(expected)))


def verify_signature(
    root: Path,
    signature_path: Path,
    check: modelsigs.Check,
    *,
    extra_ignores: Sequence[str] = (),
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
) -> Outcome:
    """Verify the signature with ``check``, then the bytes against what it signs.

    Like ``model_signing verify``: hashed with the signature's own serialization and
    ignore paths, plus the git paths and the signature file itself when it sits inside.
    """
    from muster.signatures import oms as modelsigs

    signed = check(modelsigs.read_bundle(signature_path))
    ignores = list(extra_ignores)
    inside = _relative_inside(signature_path, root)
    if inside is not None:
        ignores.append(inside)
    measured = measure(
        root,
        signed.manifest.serialization,
        extra_ignores=ignores,
        workers=workers,
        progress=progress,
    )
    differences = oms.compare(signed.manifest, measured)
    return Outcome(measured, signed.manifest.digest, differences, signed.signer)


def ignore_paths_for(root: Path, paths: Iterable[str]) -> list[str]:
    """Ignore paths given on a command line, as model paths.

    model_signing's CLI reads them relative to the working directory (``dir/ignore-me``);
    one that does not land inside the model is read relative to the model instead.
    """
    out: list[str] = []
    for raw in paths:
        candidate = Path(raw)
        inside = _relative_inside(candidate, root)
        if inside is not None:
            out.append(inside)
        elif not candidate.is_absolute():
            out.append(candidate.as_posix())
    return out


def _relative_inside(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


# -- scanning ------------------------------------------------------------------------


def scan(
    root: Path,
    *,
    allowed: Iterable[str] = (),
    limits: Limits = Limits(),
    progress: Progress | None = None,
) -> pickles.Report:
    """Judge every serialized file of a model (pickles, archives, safetensors, Keras).

    ``progress`` (when given) learns the total bytes, then the size of each file judged.
    """
    allow = tuple(allowed)
    verdicts: list[pickles.FileVerdict] = []
    files = walk(root, oms.DEFAULT_IGNORED_PATHS)
    sizes = [_size(path) for _, path in files]
    if progress is not None:
        progress.start(sum(sizes), len(files))
    for (name, path), size in zip(files, sizes, strict=True):
        label = root.name if name == "." else name
        verdict = scan_file(path, label, allowed=allow, limits=limits)
        if verdict is not None:
            verdicts.append(verdict)
        if progress is not None:
            progress.advance(size)
    return pickles.Report(tuple(verdicts))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise ModelError(f"cannot read {error.filename} ({error.strerror})") from None


def scan_file(
    path: Path, label: str | None = None, *, allowed: Iterable[str] = (), limits: Limits = Limits()
) -> pickles.FileVerdict | None:
    """Judge one file, or ``None`` when it is not a format that can carry code."""
    label = label or path.name
    allow = tuple(allowed)
    suffix = path.suffix.lower()
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            handle.seek(0)
            if suffix == ".safetensors":
                return _scan_safetensors(handle, label, path.stat().st_size)
            if head.startswith(_SEVEN_ZIP_MAGIC):
                return _scan_7z(handle, label, allow, limits)
            if head.startswith(_ZIP_MAGIC) or (
                suffix in _ZIP_SUFFIXES and zipfile.is_zipfile(handle)
            ):
                handle.seek(0)
                return _scan_zip(handle, label, allow, limits)
            if head.startswith(_NPY_MAGIC):
                return _scan_npy(handle, label, allow, limits)
            if suffix in _PICKLE_SUFFIXES or head.startswith(_PICKLE_MAGIC):
                return _scan_pickle(
                    handle, label, allow, legacy_torch=suffix in (".pt", ".pth", ".bin", ".ckpt")
                )
    except OSError as error:
        raise ModelError(f"{label}: cannot read ({error.strerror})") from None
    return None


def _scan_safetensors(handle: IO[bytes], label: str, size: int) -> pickles.FileVerdict:
    prefix = handle.read(8)
    try:
        length = pickles.safetensors_header_length(prefix)
    except ValueError as error:
        return pickles.FileVerdict(
            label, pickles.Kind.MALFORMED, (f"invalid safetensors: {error}",)
        )
    # Read the header only when the declared length is within the format's bounds.
    header = handle.read(length) if length <= min(pickles.MAX_SAFETENSORS_HEADER, size - 8) else b""
    return pickles.check_safetensors(label, prefix, header, size)


def _scan_pickle(
    handle: IO[bytes], label: str, allowed: Sequence[str], *, legacy_torch: bool = False
) -> pickles.FileVerdict:
    from picklescan import scanner  # type: ignore[import-untyped]

    try:
        imports = _picklescan_imports(scanner, handle, label, legacy_torch=legacy_torch)
    except ValueError as unresolved:  # picklescan: a STACK_GLOBAL it cannot resolve statically
        return pickles.FileVerdict(
            label,
            pickles.Kind.UNSAFE,
            (f"an import cannot be determined statically: {unresolved}",),
        )
    handle.seek(0)
    error, called = _parse_status(handle)
    if legacy_torch and error is not None and imports:
        # Legacy torch files are pickles followed by raw tensor bytes: a parse error after
        # the pickles is expected, and their imports are judged as if they parsed.
        error = None
    return pickles.classify_pickle(
        label, imports, parse_error=error, called_before_error=called, allowed=allowed
    )


def _picklescan_imports(
    scanner: Any, handle: IO[bytes], label: str, *, legacy_torch: bool = False
) -> list[pickles.Import]:
    handle.seek(0)
    if legacy_torch:
        try:
            result = scanner.scan_pytorch(handle, label)
        except Exception:  # picklescan raises plain Exception subclasses
            handle.seek(0)
            result = scanner.scan_pickle_bytes(handle, label)
    else:
        result = scanner.scan_pickle_bytes(handle, label)
    dangerous = scanner.SafetyLevel.Dangerous
    return [pickles.Import(g.module, g.name, g.safety == dangerous) for g in result.globals]


def _parse_status(handle: IO[bytes]) -> tuple[str | None, bool]:
    """Walk every pickle in the stream: the first parse error, and whether a call came first."""
    called = False
    while True:
        start = handle.tell()
        try:
            for opcode, _arg, _pos in pickletools.genops(handle):
                if opcode.name in pickles.CALL_OPCODES:
                    called = True
        except Exception as error:  # genops raises many types on garbage
            return f"{type(error).__name__}: {error}", called
        if handle.tell() == start or not handle.read(1):
            return None, called
        handle.seek(-1, io.SEEK_CUR)


def _scan_npy(
    handle: IO[bytes], label: str, allowed: Sequence[str], limits: Limits
) -> pickles.FileVerdict:
    prefix = handle.read(limits.max_npy_header)
    try:
        offset, has_object = pickles.npy_header(prefix)
    except ValueError as error:
        return pickles.FileVerdict(label, pickles.Kind.MALFORMED, (str(error),))
    if not has_object:
        return pickles.FileVerdict(label, pickles.Kind.SAFE)
    rest = handle.read(limits.max_member_bytes + 1)
    if len(rest) > limits.max_member_bytes:
        return pickles.FileVerdict(
            label, pickles.Kind.UNSCANNABLE, (f"object array over {limits.max_member_bytes} bytes",)
        )
    return _scan_pickle(io.BytesIO(prefix[offset:] + rest), label, allowed)


def _scan_zip(
    handle: IO[bytes], label: str, allowed: Sequence[str], limits: Limits
) -> pickles.FileVerdict:
    from picklescan.relaxed_zipfile import RelaxedZipFile  # type: ignore[import-untyped]

    try:
        # Relaxed like torch's reader: flag bits, CRCs and name mismatches do not stop it,
        # so a tampered header cannot make Muster skip a member torch would still load.
        archive = RelaxedZipFile(handle, "r")
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        return pickles.FileVerdict(
            label, pickles.Kind.MALFORMED, (f"unreadable zip archive: {error}",)
        )
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_entries:
            return pickles.FileVerdict(
                label,
                pickles.Kind.UNSCANNABLE,
                (f"zip holds {len(members)} entries, over {limits.max_entries}",),
            )
        member_verdicts: list[pickles.FileVerdict] = []
        budget = limits.max_total_bytes
        for info in members:
            if info.is_dir():
                continue
            member = f"{label}:{info.filename}"
            verdict, used = _scan_member(archive, info, member, allowed, limits, budget)
            budget -= used
            if verdict is not None:
                member_verdicts.append(verdict)
    return _merge(label, member_verdicts)


def _scan_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    member: str,
    allowed: Sequence[str],
    limits: Limits,
    budget: int,
) -> tuple[pickles.FileVerdict | None, int]:
    encrypted = bool(info.flag_bits & 0x1)
    name = info.filename.lower()
    suffix = os.path.splitext(name)[1]
    try:
        with archive.open(info) as stream:
            head = stream.read(8)
        is_pickle = suffix in _PICKLE_SUFFIXES or head.startswith(_PICKLE_MAGIC)
        is_npy = suffix == ".npy" or head.startswith(_NPY_MAGIC)
        is_keras_config = name.endswith("config.json") and suffix == ".json"
        if not (is_pickle or is_npy or is_keras_config):
            if encrypted:
                return _encrypted(member), len(head)
            return None, len(head)
        cap = min(limits.max_member_bytes, budget)
        with archive.open(info) as stream:
            data = stream.read(cap + 1)
    except (
        zipfile.BadZipFile,
        RuntimeError,
        NotImplementedError,
        OSError,
        EOFError,
        ValueError,
    ) as error:
        if encrypted:
            return _encrypted(member), 0
        return pickles.FileVerdict(
            member, pickles.Kind.MALFORMED, (f"unreadable member: {error}",)
        ), 0
    except Exception as error:  # zlib/lzma/bz2 errors; the file fails
        if encrypted:
            return _encrypted(member), 0
        return pickles.FileVerdict(
            member, pickles.Kind.MALFORMED, (f"unreadable member: {error}",)
        ), 0
    if len(data) > cap:
        return (
            pickles.FileVerdict(
                member, pickles.Kind.UNSCANNABLE, (f"decompresses past {cap} bytes (zip bomb?)",)
            ),
            len(data),
        )
    if is_keras_config:
        verdict = _keras_config(member, data)
    elif is_npy and not is_pickle:
        verdict = _scan_npy(io.BytesIO(data), member, allowed, limits)
    else:
        verdict = _scan_pickle(io.BytesIO(data), member, allowed)
    if encrypted and verdict.kind is not pickles.Kind.UNSAFE:
        # The flag says encrypted: what was read may be ciphertext, so nothing is known.
        return _encrypted(member), len(data)
    return verdict, len(data)


def _encrypted(member: str) -> pickles.FileVerdict:
    return pickles.FileVerdict(
        member, pickles.Kind.UNSCANNABLE, ("encrypted member cannot be inspected",)
    )


def _keras_config(member: str, data: bytes) -> pickles.FileVerdict:
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return pickles.FileVerdict(member, pickles.Kind.SAFE)
    layers = pickles.keras_lambda_layers(config)
    if layers:
        return pickles.FileVerdict(
            member,
            pickles.Kind.UNSAFE,
            tuple(f"Keras Lambda layer {name!r} runs Python code on load" for name in layers),
        )
    return pickles.FileVerdict(member, pickles.Kind.SAFE)


_SEVERITY = {
    pickles.Kind.UNSAFE: 4,
    pickles.Kind.UNSCANNABLE: 3,
    pickles.Kind.MALFORMED: 2,
    pickles.Kind.SAFE: 1,
    pickles.Kind.NOT_PICKLE: 0,
}


def _merge(label: str, verdicts: Sequence[pickles.FileVerdict]) -> pickles.FileVerdict:
    """One verdict for an archive: the worst member's kind, every failing member's reason."""
    if not verdicts:
        return pickles.FileVerdict(label, pickles.Kind.SAFE, ("archive holds no pickles",))
    worst = max(verdicts, key=lambda v: _SEVERITY[v.kind]).kind
    reasons = tuple(v.message for v in verdicts if not v.passes) or ()
    imports = tuple(sorted({i for v in verdicts for i in v.imports}))
    if worst is pickles.Kind.NOT_PICKLE:
        worst = pickles.Kind.SAFE
    return pickles.FileVerdict(label, worst, reasons, imports)


# -- 7z ------------------------------------------------------------------------------


def _scan_7z(
    handle: IO[bytes], label: str, allowed: Sequence[str], limits: Limits
) -> pickles.FileVerdict:
    # py7zr costs about 0.1 s to import: paid only when a model holds a 7z archive.
    from muster.models import sevenzip

    verdicts: list[pickles.FileVerdict] = []

    def wanted(name: str, head: bytes) -> bool:
        suffix = os.path.splitext(name.lower())[1]
        return suffix in _PICKLE_SUFFIXES or head.startswith(_PICKLE_MAGIC)

    def judge(name: str, content: bytes) -> None:
        verdicts.append(_scan_pickle(io.BytesIO(content), f"{label}:{name}", allowed))

    try:
        sevenzip.read_members(
            handle,
            wanted=wanted,
            judge=judge,
            max_entries=limits.max_entries,
            max_member_bytes=limits.max_member_bytes,
            max_total_bytes=limits.max_total_bytes,
        )
    except sevenzip.Refused as error:
        return pickles.FileVerdict(label, pickles.Kind.UNSCANNABLE, (str(error),))
    except sevenzip.Malformed as error:
        return pickles.FileVerdict(label, pickles.Kind.MALFORMED, (str(error),))
    return _merge(label, verdicts)
