# mypy: disable-error-code="no-untyped-call"
# model_signing's public constructors are untyped.
"""Every path the hasher takes gives model_signing's digest: files at and around the read
chunk's size, empty files, shards whose bounds fall on a chunk's, blake3's every-core path,
names in manifest order without a sort, ignore paths looked up as names, a file that grows or
vanishes after the walk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import blake3
import pytest
from model_signing import hashing
from model_signing._signing import signing

from muster.models import files as modelfiles
from muster.signatures.rules import oms

pytestmark = pytest.mark.unit

Algorithm = Literal["sha256", "blake2", "blake3"]
CHUNK = modelfiles._CHUNK
MAPPED = modelfiles._MAP_AT  # from this size a file (or shard) is hashed mapped, not read
CHOICES: list[tuple[Algorithm, int | None]] = [
    ("sha256", None),
    ("blake2", None),
    ("blake3", None),
    ("sha256", CHUNK),  # shard bounds on chunk bounds
    ("blake2", CHUNK),
    ("sha256", 3 * CHUNK // 2),  # shard bounds inside a chunk
    ("blake2", MAPPED + 12_345),  # shards large enough to be mapped, starting off a page
]
IDS = [f"{a}-{'shards-' + str(s) if s else 'files'}" for a, s in CHOICES]


def model_signing_digest(root: Path, algorithm: Algorithm, shard: int | None) -> str:
    config = hashing.Config()
    if shard is None:
        config.use_file_serialization(hashing_algorithm=algorithm)
    else:
        config.use_shard_serialization(hashing_algorithm=algorithm, shard_size=shard)
    subject = signing.Payload(config.hash(root)).statement.pb.subject[0]
    return f"sha256:{subject.digest['sha256']}"


@pytest.fixture(scope="module")
def sized_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files at every edge of the read chunk, next to small and empty ones."""
    root = tmp_path_factory.mktemp("sized") / "model"
    (root / "weights").mkdir(parents=True)
    block = os.urandom(2 * MAPPED + 3 * CHUNK)
    sizes = {
        "mapped-threshold.safetensors": MAPPED,
        "a-byte-short-of-mapped.safetensors": MAPPED - 1,
        "two-mapped-shards-and-more.safetensors": 2 * (MAPPED + 12_345) + CHUNK + 7,
        "exactly-one-chunk.safetensors": CHUNK,
        "one-chunk-and-a-byte.safetensors": CHUNK + 1,
        "two-chunks.safetensors": 2 * CHUNK,
        "a-byte-short.safetensors": CHUNK - 1,
        "blake3-threshold.bin": modelfiles._BLAKE3_ALL_CORES,
        "small.bin": 65_536,
        "empty.bin": 0,
    }
    for name, size in sizes.items():
        (root / "weights" / name).write_bytes(block[:size])
    (root / "config.json").write_text('{"layers": 2}\n')
    (root / "empty").write_bytes(b"")
    return root


@pytest.mark.parametrize(("algorithm", "shard"), CHOICES, ids=IDS)
@pytest.mark.parametrize("workers", [1, 4])
def test_every_read_and_shard_boundary_gives_model_signings_digest(
    sized_model: Path, algorithm: Algorithm, shard: int | None, workers: int
) -> None:
    serialization = oms.serialization_for(algorithm, shard)
    measured = modelfiles.measure(sized_model, serialization, workers=workers)
    assert measured.digest == model_signing_digest(sized_model, algorithm, shard)
    # Built without a sort, yet in the order Manifest.build sorts into.
    rebuilt = oms.Manifest.build(measured.model_name, measured.resources, serialization)
    assert rebuilt == measured


@pytest.mark.parametrize(("algorithm", "shard"), CHOICES, ids=IDS)
def test_a_mapped_file_hashed_in_many_slices_gives_model_signings_digest(
    sized_model: Path, algorithm: Algorithm, shard: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slices that end inside a shard and off a page: each update covers part of the mapping.
    monkeypatch.setattr(modelfiles, "_MAP_SLICE", (1 << 20) + 7)
    serialization = oms.serialization_for(algorithm, shard)
    measured = modelfiles.measure(sized_model, serialization, workers=2)
    assert measured.digest == model_signing_digest(sized_model, algorithm, shard)


@pytest.mark.parametrize(
    ("algorithm", "reference"),
    [
        ("sha256", lambda data: hashlib.sha256(data).hexdigest()),
        ("blake2b", lambda data: hashlib.blake2b(data).hexdigest()),
        ("blake3", lambda data: blake3.blake3(data).hexdigest()),
    ],
)
def test_each_file_digest_is_the_digest_of_its_bytes(
    sized_model: Path, algorithm: str, reference: object
) -> None:
    manifest = modelfiles.measure(sized_model, oms.Serialization(hash_type=algorithm))
    for resource in manifest.resources:
        data = (sized_model / resource.name).read_bytes()
        assert callable(reference)
        assert resource.digest == reference(data), resource.name


def test_names_come_in_manifest_order_without_a_sort(tmp_path: Path) -> None:
    # Names whose order differs between a whole-path string sort and a per-part sort.
    root = tmp_path / "model"
    for name in ["a/z", "a-b", "a.txt", "a/b/c", "a/b-c", "A", "b", "ä/x", "a0", "a/b.c/d"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    for serialization in (oms.Serialization(), oms.serialization_for("sha256", 3)):
        measured = modelfiles.measure(root, serialization)
        rebuilt = oms.Manifest.build(measured.model_name, measured.resources, serialization)
        assert measured.resources == rebuilt.resources
    assert measured.digest == model_signing_digest(root, "sha256", 3)


@pytest.mark.parametrize(
    "ignores",
    [
        ["a"],
        ["a/"],
        ["./a/b"],
        ["a//b/c"],
        ["a/b/../x"],
        ["../outside", "..", "b"],
        ["nothing-here", "/absolute/a"],
        ["a/b", "a/b/c"],
    ],
)
def test_ignore_paths_drop_the_files_oms_ignores(tmp_path: Path, ignores: list[str]) -> None:
    root = tmp_path / "model"
    for name in ["a/b/c", "a/b/d", "a/x", "a/bc", "ab", "b", "c/a"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    everything = [name for name, _ in modelfiles.walk(root, ())]
    kept = [name for name, _ in modelfiles.walk(root, ignores)]
    assert kept == [name for name in everything if not oms.is_ignored(name, ignores)]


@pytest.mark.parametrize("ignore", ["", ".", "./"])
def test_ignoring_the_root_leaves_nothing(tmp_path: Path, ignore: str) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "f").write_text("x")
    assert modelfiles.walk(tmp_path / "model", [ignore]) == []


class _Meddler:
    """A progress report that changes the model between the walk and the hashing."""

    def __init__(self, change: object) -> None:
        self.change = change

    def start(self, total_bytes: int, files: int) -> None:
        assert callable(self.change)
        self.change()

    def advance(self, hashed_bytes: int) -> None:
        pass


def test_a_file_that_grows_after_the_walk_is_hashed_to_its_end(tmp_path: Path) -> None:
    # model_signing reads to the end of the file, whatever its size was when listed.
    root = tmp_path / "model"
    root.mkdir()
    grown = root / "weights.bin"
    grown.write_bytes(os.urandom(70_000))
    (root / "small").write_bytes(b"x")
    more = os.urandom(CHUNK + 5)

    def grow() -> None:
        with grown.open("ab") as handle:
            handle.write(more)

    measured = modelfiles.measure(root, progress=_Meddler(grow))
    assert measured.by_name()["weights.bin"].digest == (
        hashlib.sha256(grown.read_bytes()).hexdigest()
    )
    assert measured.digest == model_signing_digest(root, "sha256", None)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_file_gone_after_the_walk_is_an_error_naming_it(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "model"
    root.mkdir()
    for index in range(6):
        (root / f"f{index}").write_bytes(os.urandom(1000 * index))
    with pytest.raises(modelfiles.ModelError, match=r"^f3: cannot read \(No such file"):
        modelfiles.measure(root, workers=workers, progress=_Meddler((root / "f3").unlink))
