"""Progress for long CLI work: one stderr line, totals right, the digest unchanged."""

from __future__ import annotations

import argparse
import io
import threading
from pathlib import Path

import pytest

from muster.adapters import modelfiles
from muster.cli import progress

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
