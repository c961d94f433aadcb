"""Model bytes on disk: walk a model safely, hash it in parallel, verify it, scan it.

Hashing reads each file in large chunks into one reusable buffer per worker, so memory
stays at ``workers x chunk`` whatever the model size; ``hashlib`` and ``blake3`` release the
GIL, so a thread pool uses every core. The manifest is ``model_signing``-compatible (see
``muster.signatures.rules.oms``); the digest of a model is the same number ``model_signing`` signs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import mmap
import os
import pickletools
import stat
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

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
_MAP_AT = 16 << 20  # a file this large is hashed mapped, not read (see _hash_mapped)
_MAP_SLICE = 64 << 20  # how much of a mapped file one update hashes: progress stays smooth
_BLAKE3_ALL_CORES = 1 << 20  # a blake3 file this large is also hashed on every core

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
    return [(name, Path(path)) for name, path, _ in _listing(root, ignore_paths, allow_symlinks)]


def _listing(
    root: Path, ignore_paths: Iterable[str], allow_symlinks: bool
) -> list[tuple[str, str, int]]:
    """:func:`walk`'s files as ``(name, path, size)``, in the order a manifest lists them.

    Each folder's entries are taken sorted by name, depth first: that is the order of
    ``oms.sort_key`` (``PurePosixPath`` parts), so measuring needs no sort.
    """
    try:
        top = root.lstat()
    except OSError as error:
        raise ModelError(f"{root}: cannot read ({error.strerror})") from None
    if stat.S_ISLNK(top.st_mode):
        raise ModelError(f"{root}: the model path itself is a symlink; give its target")
    if stat.S_ISREG(top.st_mode):
        return [(".", str(root), top.st_size)]
    if not stat.S_ISDIR(top.st_mode):
        raise ModelError(f"{root}: not a regular file or directory")
    ignored = _ignored_names(ignore_paths)
    found: list[tuple[str, str, int]] = []
    if ignored is not None:
        _walk_dir(str(root), "", root.resolve(), ignored, allow_symlinks, found, frozenset())
    return found


def _ignored_names(ignore_paths: Iterable[str]) -> frozenset[str] | None:
    """The names ``oms.is_ignored`` ignores, to look up as a set; ``None`` when it ignores all.

    ``oms.is_ignored`` also ignores every name below an ignored one; the walk never enters an
    ignored folder, so looking up each name as it is met gives the same answer.
    """
    names: set[str] = set()
    for raw in ignore_paths:
        name = oms.normalize_ignore_path(raw)
        if name == "..":
            continue
        if name.startswith("../"):
            continue  # model_signing drops ignore paths outside the model
        if name == "":
            return None
        names.add(name)
    return frozenset(names)


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _walk_dir(
    directory: str,
    prefix: str,
    real_root: Path,
    ignored: frozenset[str],
    allow_symlinks: bool,
    found: list[tuple[str, str, int]],
    seen: frozenset[tuple[int, int]],
) -> None:
    try:
        info = os.stat(directory)
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=_entry_name)
    except OSError as error:
        raise ModelError(f"{directory}: cannot list ({error.strerror})") from None
    key = (info.st_dev, info.st_ino)
    if key in seen:  # a directory reached twice through symlinks
        raise ModelError(f"{directory}: symlink loop")
    seen = seen | {key}
    for entry in entries:
        name = f"{prefix}{entry.name}"
        if name in ignored:
            continue
        try:
            # One lstat gives the kind and the size (the hashing order and progress need it).
            info = entry.stat(follow_symlinks=False)
        except OSError as error:
            raise ModelError(f"{name}: cannot read ({error.strerror})") from None
        if stat.S_ISLNK(info.st_mode):
            info = _check_symlink(Path(entry.path), name, real_root, allow_symlinks)
        if stat.S_ISREG(info.st_mode):
            found.append((name, entry.path, info.st_size))
        elif stat.S_ISDIR(info.st_mode):
            _walk_dir(entry.path, f"{name}/", real_root, ignored, allow_symlinks, found, seen)
        else:
            raise ModelError(f"{name}: {_kind(info.st_mode)} cannot be part of a model")


def _check_symlink(path: Path, name: str, real_root: Path, allow_symlinks: bool) -> os.stat_result:
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
    return target.stat()


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
    job = _Job(str(path), str(path), start, end, -1 if end is None else end)
    return _hash_job(job, algorithm, _buffer(chunk), advance)


class _Job(NamedTuple):
    """One resource to hash: ``path[start:end]`` (``end`` None: to the end of the file)."""

    name: str
    path: str
    start: int
    end: int | None
    expected_end: int  # where the walk's stat said the bytes end; -1 when not known

    @property
    def length(self) -> int:
        return self.expected_end - self.start


def _hash_job(
    job: _Job, algorithm: str, view: memoryview, advance: Callable[[int], None] | None
) -> str:
    """Hex digest of one job, read into ``view``.

    A whole file is read to its end, whatever its size was at the walk (model_signing reads
    until EOF too). Each read asks for what the walk's stat says is left: the kernel serves a
    read the size of a small file faster than one the size of the buffer.
    """
    hasher = _hasher(algorithm, job.length)
    if isinstance(hasher, blake3.blake3) and _whole_large_file(job):
        # Mapped, as model_signing hashes blake3 files: the binding then hashes the pages on
        # every core with no copy into a buffer, about 1.4x the speed of reads here. A file
        # cut short while it is mapped ends the process (SIGBUS) instead of raising: only
        # the CLI hashes, and a verifier that dies fails closed like one that refuses.
        hasher.update_mmap(job.path)
        if advance is not None:
            advance(job.expected_end)
        return hasher.hexdigest()
    chunk = len(view)
    position, end, expected = job.start, job.end, job.expected_end
    fd = os.open(job.path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if min(size, end if end is not None else size) - position >= _MAP_AT:
            return _hash_mapped(fd, size, job, hasher, advance)
        if position:
            os.lseek(fd, position, os.SEEK_SET)
        while True:
            if end is not None:
                want = min(chunk, end - position)
                if want <= 0:
                    break
            elif position < expected:
                want = min(chunk, expected - position)
            else:
                want = chunk  # where the file should end: confirm it does
            got = os.readv(fd, [view[:want]])
            if not got:
                break
            hasher.update(view[:got])
            position += got
            if advance is not None:
                advance(got)
    finally:
        os.close(fd)
    return hasher.hexdigest()


def _hash_mapped(
    fd: int, size: int, job: _Job, hasher: _Hasher, advance: Callable[[int], None] | None
) -> str:
    """Hex digest of a large job hashed from the file mapped into memory.

    The hash reads the page cache directly instead of a copy of it: 8-16% less CPU for
    sha256 and 3-7% for blake2 on multi-GB shards, where the hash itself is all the rest. The
    file is mapped as long as it is when opened, so a whole file is still hashed to its end.
    As with blake3's mapping, a file cut short while mapped ends the process (SIGBUS).
    """
    end = size if job.end is None else min(job.end, size)
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mapped:
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        pages = memoryview(mapped)
        try:
            for offset in range(job.start, end, _MAP_SLICE):
                piece = pages[offset : min(offset + _MAP_SLICE, end)]
                hasher.update(piece)
                piece.release()
                if advance is not None:
                    advance(min(offset + _MAP_SLICE, end) - offset)
        finally:
            pages.release()
    return hasher.hexdigest()


def _whole_large_file(job: _Job) -> bool:
    return job.start == 0 and job.end is None and job.expected_end >= _BLAKE3_ALL_CORES


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


_CONSTRUCTORS: dict[str, Callable[[], _Hasher]] = {
    "sha256": hashlib.sha256,
    "blake2b": hashlib.blake2b,
}


def _hasher(algorithm: str, size: int = -1) -> _Hasher:
    """A streaming hasher for an OMS algorithm (sha256, blake2b, blake3) and a job's size."""
    if algorithm == "blake3":
        if 0 <= size < _BLAKE3_ALL_CORES:
            return blake3.blake3()  # a small file: one core, no thread pool to wake
        # The Rust binding spreads one large update over every core (as model_signing's
        # blake3 hashing does), so one big weights file is not hashed on a single core.
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    constructor = _CONSTRUCTORS.get(algorithm)
    return constructor() if constructor is not None else hashlib.new(algorithm)


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
    files = _listing(root, ignores, serialization.allow_symlinks)
    jobs: list[_Job] = []
    if serialization.method == "shards":
        for name, path, size in files:
            for start, end in oms.shard_bounds(size, serialization.shard_size or size or 1):
                jobs.append(_Job(f"{name}:{start}:{end}", path, start, end, end))
    else:
        jobs = [_Job(name, path, 0, None, size) for name, path, size in files]
    advance = None
    if progress is not None:
        progress.start(sum(job.length for job in jobs), len(files))
        advance = progress.advance
    digests = _hash_all(jobs, serialization.algorithm, max(1, workers), advance)
    algorithm = serialization.resource_algorithm
    resources = tuple(
        oms.Resource(job.name, algorithm, digest) for job, digest in zip(jobs, digests, strict=True)
    )
    model_name = root.name or os.path.basename(root.resolve())
    # The jobs are in manifest order already (see _listing; shards by offset), which is what
    # Manifest.build would sort them into: skipping the sort saves a path parse per file.
    return oms.Manifest(model_name, resources, serialization)


def _hash_all(
    jobs: Sequence[_Job],
    algorithm: str,
    workers: int,
    advance: Callable[[int], None] | None,
) -> list[str]:
    """The digest of every job, in the jobs' order, hashed by ``workers`` threads.

    Each thread takes the next job when it is done: no future or queue entry per job, which
    on a model of many small files cost as much as hashing them. The largest jobs go first, so
    a big file never starts last, alone on one core, while the other cores have nothing left.
    The first error stops every thread after its current job and is raised here.
    """
    digests = [""] * len(jobs)
    order = iter(sorted(range(len(jobs)), key=lambda index: jobs[index].length, reverse=True))
    lock = threading.Lock()
    failures: list[BaseException] = []
    # Reads are never larger than the largest job: a model of small files needs small buffers.
    largest = max((job.length for job in jobs), default=0)
    size = _CHUNK if largest < 0 else min(_CHUNK, max(largest + 1, 1 << 16))

    def work() -> None:
        view = memoryview(bytearray(size))
        while not failures:
            with lock:
                index = next(order, None)
            if index is None:
                return
            job = jobs[index]
            try:
                digests[index] = _hash_job(job, algorithm, view, advance)
            except OSError as error:
                failures.append(ModelError(f"{job.name}: cannot read ({error.strerror})"))
            except BaseException as error:  # re-raised in the calling thread
                failures.append(error)

    helpers = [
        threading.Thread(target=work, name=f"muster-hash-{n}", daemon=True)
        for n in range(min(workers, len(jobs)) - 1)
    ]
    for helper in helpers:
        helper.start()
    try:
        work()  # the calling thread hashes too
    finally:
        for helper in helpers:
            helper.join()
    if failures:
        raise failures[0]
    return digests


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
