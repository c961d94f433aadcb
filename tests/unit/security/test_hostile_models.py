"""Hostile model directories (the model gate's own tests cover single symlink escapes, loops,
FIFOs and zip bombs; these add random trees of links, device files, sparse files and huge
file counts): a clear ModelError or a result, in bounded time, never another exception."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muster.models import files as modelfiles
from muster.models.rules import pickles

pytestmark = pytest.mark.unit

NAMES = st.sampled_from(["a", "b", "c", "d/e", "d/f", "g/h/i"])
TARGETS = st.sampled_from(["a", "b", "../a", "../../x", "d", "d/e", ".", "..", "/etc", "g/h"])


@settings(
    max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.lists(NAMES, max_size=4, unique=True),
    links=st.lists(st.tuples(NAMES, TARGETS), max_size=4),
    allow=st.booleans(),
)
def test_random_trees_of_files_and_links_get_a_clear_answer(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[str],
    links: list[tuple[str, str]],
    allow: bool,
) -> None:
    root = tmp_path_factory.mktemp("hostile") / "model"
    root.mkdir()
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if not (root / name).exists():
            (root / name).write_bytes(b"w")
    for name, target in links:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(path):
            path.symlink_to(target)
    started = time.monotonic()
    try:
        found = modelfiles.walk(root, allow_symlinks=allow)
    except modelfiles.ModelError as error:
        assert str(error)
    else:
        real_root = root.resolve()
        for _, path in found:  # whatever is listed lies inside the model
            assert path.resolve().is_relative_to(real_root)
            assert stat.S_ISREG(path.stat().st_mode)
    assert time.monotonic() - started < 2


def test_a_device_or_socket_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"w")
    if os.geteuid() == 0:  # a character device (/dev/zero's numbers) needs root to create
        os.mknod(tmp_path / "zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        with pytest.raises(modelfiles.ModelError, match=r"^zero: .*device"):
            modelfiles.walk(tmp_path)
        (tmp_path / "zero").unlink()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "sock"))
        with pytest.raises(modelfiles.ModelError, match=r"^sock: "):
            modelfiles.walk(tmp_path)


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").symlink_to("/dev/zero")
    for allow in (False, True):
        with pytest.raises(modelfiles.ModelError, match=r"escapes|symlink"):
            modelfiles.walk(tmp_path, allow_symlinks=allow)


def test_a_sparse_pickle_is_judged_without_reading_its_holes(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    with path.open("wb") as handle:
        handle.write(b"\x80\x04")
        handle.truncate(64 << 30)  # 64 GiB apparent, a few bytes on disk
    started = time.monotonic()
    verdict = modelfiles.scan_file(path)
    assert time.monotonic() - started < 5
    assert verdict is not None
    assert verdict.kind is not pickles.Kind.SAFE


def test_a_huge_file_count_is_walked_in_linear_time(tmp_path: Path) -> None:
    for directory in range(20):
        folder = tmp_path / f"shard-{directory}"
        folder.mkdir()
        for n in range(500):
            (folder / f"{n}.bin").touch()
    started = time.monotonic()
    found = modelfiles.walk(tmp_path)
    assert len(found) == 10_000
    assert time.monotonic() - started < 10
