"""Progress for long CLI work: one stderr line, totals right, the digest unchanged."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from muster import cli
from muster.cli import progress
from muster.models import files as modelfiles

pytestmark = pytest.mark.unit


def test_concurrent_advances_add_up_and_the_last_line_ends_the_report() -> None:
    stream = io.StringIO()
    report = progress.StderrProgress("hashing", stream=stream, interval=3600)
    report.start(4 * 1000 * 1024, 3)

    def work() -> None:
        for _ in range(1000):
            report.advance(1024)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert report.done == report.total
    lines = stream.getvalue().split("\r")[1:]
    assert len(lines) == 2  # the first draw and the final one: the interval holds the rest back
    assert lines[-1].startswith("hashing 3 files: 3.9 MiB / 3.9 MiB (100%,")
    assert lines[-1].endswith("\n")


def test_measure_reports_every_byte_and_digests_as_without_progress(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x" * 300_000)
    (tmp_path / "config.json").write_text("{}")
    stream = io.StringIO()
    report = progress.StderrProgress("hashing", stream=stream)
    with_progress = modelfiles.measure(tmp_path, progress=report)
    assert report.total == 300_002
    assert report.done == 300_002
    assert report.files == 2
    assert with_progress.digest == modelfiles.measure(tmp_path).digest
    last = stream.getvalue().rsplit("\r", 1)[1]
    assert last.startswith("hashing 2 files: 293.0 KiB / 293.0 KiB (100%, ")
    assert last.endswith("\n")


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB")])
def test_human_sizes(size: int, text: str) -> None:
    assert progress.human(size) == text


def test_progress_is_off_without_a_terminal_unless_asked() -> None:
    assert progress.for_args(argparse.Namespace(progress=None), "hashing") is None  # pytest pipes
    assert progress.for_args(argparse.Namespace(progress=True), "hashing") is not None


def _model(folder: Path) -> Path:
    model = folder / "model"
    model.mkdir()
    size = 200_000  # one valid safetensors tensor of 200 000 bytes, so the scan passes
    header = json.dumps({"t": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    header += " " * (-len(header) % 8)
    (model / "model.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header.encode() + b"x" * size
    )
    (model / "config.json").write_text("{}")
    return model


def _total(model: Path) -> str:
    return progress.human(sum(path.stat().st_size for path in model.iterdir()))


def _muster(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("command", "verb"),
    [
        (("verify", "MODEL", "--digest", "DIGEST"), "hashing"),
        (("register", "MODEL", "--name", "tiny"), "hashing"),
        (("scan", "MODEL"), "scanning"),
    ],
)
def test_long_model_commands_report_progress_on_stderr_only(
    tmp_path: Path, command: tuple[str, ...], verb: str
) -> None:
    model = _model(tmp_path)
    digest = modelfiles.measure(model).digest
    argv = [{"MODEL": str(model), "DIGEST": digest}.get(word, word) for word in command]
    code, out, err = _muster("model", *argv, "--progress")
    assert code == 0, err
    total = _total(model)
    assert err.rsplit("\r", 1)[1].startswith(f"{verb} 2 files: {total} / {total} (100%, ")
    assert "\r" not in out
    code, _, quiet = _muster("model", *argv)  # pytest's stderr is no terminal
    assert code == 0
    assert quiet == ""


def _on_a_terminal(*argv: str) -> tuple[int, str, str]:
    """``muster ARGV`` in a child process whose stderr is a real pseudo-terminal."""
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "muster", *argv],
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(follower)
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the terminal has nothing more
            while chunk := os.read(leader, 65536):
                chunks.append(chunk)
    finally:
        os.close(leader)
    return done.returncode, done.stdout, b"".join(chunks).decode()


def test_on_a_terminal_progress_shows_by_default_but_not_with_json(tmp_path: Path) -> None:
    model = _model(tmp_path)
    code, out, terminal = _on_a_terminal("model", "digest", str(model))
    assert code == 0
    total = _total(model)
    assert f"hashing 2 files: {total} / {total} (100%, " in terminal
    assert out.strip() == modelfiles.measure(model).digest
    code, out, terminal = _on_a_terminal("model", "digest", str(model), "--format", "json")
    assert code == 0
    assert "hashing" not in terminal
    assert json.loads(out)["digest"] == modelfiles.measure(model).digest
