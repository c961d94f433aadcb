"""Helpers for the model gate tests: the real OMS fixtures, keys, and real model_signing."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests import datasetfiles
from tests.paths import fixture

MODEL_TRANSPARENCY = ("models", "model-transparency")


def transparency(*parts: str) -> Path:
    return fixture(*MODEL_TRANSPARENCY, *parts)


@pytest.fixture
def write_key(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Write a fresh EC key pair (PEM) and return (private, public) paths."""

    def write(name: str = "signer", curve: ec.EllipticCurve | None = None) -> tuple[Path, Path]:
        return datasetfiles.key_pair(tmp_path, name, curve)

    return write


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model: nested files, an empty file, a hidden file, git clutter."""
    root = tmp_path / "tiny-model"
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "shard-1.bin").write_bytes(bytes(range(256)) * 64)
    (root / "weights" / "shard-2.bin").write_bytes(b"\x00" * 5000)
    (root / "config.json").write_text('{"layers": 2}\n')
    (root / "empty").write_bytes(b"")
    (root / ".hidden").write_text("kept\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".gitattributes").write_text("*.bin filter=lfs\n")
    return root


def copy_fixture(name: str, destination: Path) -> Path:
    """A writable copy of one model-transparency signature folder."""
    target = destination / name
    shutil.copytree(transparency(name), target)
    return target
