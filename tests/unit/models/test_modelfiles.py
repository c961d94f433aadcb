"""Walking and hashing model directories: safety checks and parallel, bounded hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from muster.models import files as modelfiles
from muster.signatures.rules import oms

pytestmark = pytest.mark.unit


def test_walk_lists_files_by_posix_name_and_skips_git_paths(model_dir: Path) -> None:
    names = sorted(name for name, _ in modelfiles.walk(model_dir))
    assert names == [
        ".hidden",
        "config.json",
        "empty",
        "weights/shard-1.bin",
        "weights/shard-2.bin",
    ]


def test_single_file_is_named_dot(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    assert modelfiles.walk(weights) == [(".", weights)]


def test_symlink_escaping_the_directory_is_refused_even_when_links_are_allowed(
    model_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret"
    outside.write_text("x")
    (model_dir / "weights" / "link.bin").symlink_to(outside)
    for allow in (False, True):
        with pytest.raises(modelfiles.ModelError) as raised:
            modelfiles.walk(model_dir, allow_symlinks=allow)
        assert str(raised.value).startswith("weights/link.bin: symlink escapes the model directory")


def test_symlinked_directory_escaping_is_refused(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (model_dir / "data").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(modelfiles.ModelError, match=r"^data: symlink escapes"):
        modelfiles.walk(model_dir, allow_symlinks=True)


def test_symlink_loop_is_refused(model_dir: Path) -> None:
    (model_dir / "a").symlink_to(model_dir / "b")
    (model_dir / "b").symlink_to(model_dir / "a")
    with pytest.raises(modelfiles.ModelError, match=r"^a: symlink loop"):
        modelfiles.walk(model_dir, allow_symlinks=True)


def test_directory_symlink_cycle_is_refused(model_dir: Path) -> None:
    (model_dir / "weights" / "again").symlink_to(model_dir / "weights")
    with pytest.raises(modelfiles.ModelError, match="symlink loop"):
        modelfiles.walk(model_dir, allow_symlinks=True)


def test_inner_symlink_needs_allow_symlinks_and_hashes_its_target(model_dir: Path) -> None:
    (model_dir / "alias.bin").symlink_to("weights/shard-2.bin")
    with pytest.raises(modelfiles.ModelError, match=r"^alias\.bin: is a symlink"):
        modelfiles.walk(model_dir)
    manifest = modelfiles.measure(model_dir, oms.Serialization(allow_symlinks=True))
    digests = manifest.by_name()
    assert digests["alias.bin"].digest == digests["weights/shard-2.bin"].digest


def test_broken_symlink_is_named(model_dir: Path) -> None:
    (model_dir / "gone").symlink_to(model_dir / "nowhere")
    with pytest.raises(modelfiles.ModelError, match=r"^gone: broken symlink"):
        modelfiles.walk(model_dir, allow_symlinks=True)


def test_fifo_is_refused(model_dir: Path) -> None:
    os.mkfifo(model_dir / "weights" / "pipe")
    with pytest.raises(
        modelfiles.ModelError, match=r"^weights/pipe: a FIFO cannot be part of a model"
    ):
        modelfiles.walk(model_dir)


def test_missing_model_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(modelfiles.ModelError, match="cannot read"):
        modelfiles.walk(tmp_path / "absent")


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_hash_file_matches_hashlib_for_any_chunk_and_range(tmp_path: Path, chunk: int) -> None:
    data = os.urandom(50_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert modelfiles.hash_file(path, chunk=chunk) == hashlib.sha256(data).hexdigest()
    assert modelfiles.hash_file(path, start=123, end=40_000, chunk=chunk) == (
        hashlib.sha256(data[123:40_000]).hexdigest()
    )


def test_parallel_and_serial_hashing_agree(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for index in range(60):
        folder = root / f"d{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}").write_bytes(os.urandom(index * 37))
    serial = modelfiles.measure(root, workers=1)
    parallel = modelfiles.measure(root, workers=8)
    assert serial == parallel
    assert len(serial.resources) == 60


def test_blake2_serialization(model_dir: Path) -> None:
    manifest = modelfiles.measure(model_dir, oms.Serialization(hash_type="blake2b"))
    data = (model_dir / "config.json").read_bytes()
    assert manifest.by_name()["config.json"].digest == hashlib.blake2b(data).hexdigest()


def test_verify_digest(model_dir: Path) -> None:
    digest = modelfiles.measure(model_dir).digest
    assert modelfiles.verify_digest(model_dir, digest).passes
    (model_dir / "config.json").write_text("{}")
    outcome = modelfiles.verify_digest(model_dir, digest)
    assert not outcome.passes
    assert outcome.expected_digest == digest != outcome.measured.digest
