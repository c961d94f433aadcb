"""The third-party fixtures carry their provenance and licences, file for file."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests import paths

pytestmark = pytest.mark.unit

# Every data folder (gpu, models, pickles, sigstore, ...); LICENSES holds the licence texts.
FOLDERS = sorted(p.name for p in paths.FIXTURES.iterdir() if p.is_dir() and p.name != "LICENSES")
# A folder's own description files, which no provenance line describes.
BOOKKEEPING = {"MANIFEST.md", "provenance.jsonl"}
# `owner/repo@commit` in an origin; derived files name their sources without a commit.
_PINNED = re.compile(r"([A-Za-z0-9][\w.-]*/[\w.-]+)@[0-9a-f]{7,40}")


def _rows(folder: str) -> list[dict[str, Any]]:
    provenance = paths.FIXTURES / folder / "provenance.jsonl"
    assert provenance.is_file(), (
        f"{folder}/ needs a provenance.jsonl (see tests/fixtures/README.md)"
    )
    text = provenance.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _licensed() -> set[str]:
    root = paths.FIXTURES / "LICENSES"
    return {path.relative_to(root).with_suffix("").as_posix() for path in root.glob("*/*.txt")}


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_file_has_its_provenance(folder: str) -> None:
    rows = _rows(folder)
    described = {row["file"] for row in rows}
    assert len(described) == len(rows), "a file is described twice"
    on_disk = {
        path.relative_to(paths.FIXTURES).as_posix()
        for path in (paths.FIXTURES / folder).rglob("*")
        if path.is_file() and path.name not in BOOKKEEPING
    }
    assert on_disk - described == set(), "files without a provenance line"
    assert described - on_disk == set(), "provenance lines for files that are not here"
    for row in rows:
        data = (paths.FIXTURES / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"], row["file"]
        assert row["license"], row["file"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_upstream_has_its_licence_text(folder: str) -> None:
    licensed = _licensed()
    for row in _rows(folder):
        origin: str = row["origin"]
        pinned = set(_PINNED.findall(origin))
        assert pinned <= licensed, f"{row['file']}: no licence text for {pinned - licensed}"
        assert any(repo in origin for repo in licensed), f"{row['file']}: {origin}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_manifests_list_only_files_that_are_here(folder: str) -> None:
    """A MANIFEST's file index names files of its own folder; none may be missing."""
    manifest = paths.FIXTURES / folder / "MANIFEST.md"
    assert manifest.is_file(), f"{folder}/ needs a MANIFEST.md (see tests/fixtures/README.md)"
    text = manifest.read_text(encoding="utf-8")
    start = text.find("## File index")
    index = text[start:] if start >= 0 else text
    for name in re.findall(r"^\| `([^`*]+)` \|", index, re.MULTILINE):
        if "/" in name or "." in name:  # a file, not a case or folder name in a table
            assert (paths.FIXTURES / folder / name).exists(), f"{folder}/MANIFEST.md: {name}"


def test_nothing_refers_to_data_outside_the_repository() -> None:
    """The suite once read a folder beside the checkout; no file may point there again."""
    word = b"shared"  # spelt in pieces so that this file does not match itself
    outside = re.compile(rb"\.\./" + word + rb"\b|" + word + rb"/fixtures|MUSTER_" + word.upper())
    offenders = [
        path.relative_to(paths.REPO).as_posix()
        for path in _repository_files(paths.REPO)
        if outside.search(path.read_bytes())
    ]
    assert offenders == []


# What .gitignore leaves out (caches, the virtual environment, build output), and the data.
_NOT_SOURCE = {".git", ".venv", ".hypothesis", "__pycache__", "build", "dist", "node_modules"}


def _repository_files(root: Path) -> list[Path]:
    skipped = {paths.FIXTURES, paths.REPO / "benchmarks" / "results"}
    found: list[Path] = []
    for path in root.iterdir():
        name = path.name
        if path in skipped or name in _NOT_SOURCE or name.endswith((".egg-info", "_cache")):
            continue
        if path.is_dir() and not path.is_symlink():
            found += _repository_files(path)
        elif path.is_file():
            found.append(path)
    return found
