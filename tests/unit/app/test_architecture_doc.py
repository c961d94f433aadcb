"""docs/architecture.md names the package as it is: each folder, and each module in its table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "operator" / "muster"
PAGE = (ROOT / "docs" / "architecture.md").read_text()
ROW = re.compile(r"^\| `(?P<folder>[a-z]+)/` \| (?P<text>.*) \|$", re.M)
MODULE = re.compile(r"`((?:rules/)?[a-z_]+\.py)`")


def test_the_table_lists_every_folder_of_the_package() -> None:
    listed = {row["folder"] for row in ROW.finditer(PAGE)}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert listed == folders - {"demo"}


def test_every_module_the_table_names_exists() -> None:
    named = [
        (row["folder"], module)
        for row in ROW.finditer(PAGE)
        for module in MODULE.findall(row["text"])
    ]
    assert len(named) >= 30
    missing = [
        f"{folder}/{module}"
        for folder, module in named
        if not (PACKAGE / folder / module).is_file()
    ]
    assert missing == []


def test_every_module_path_in_the_text_exists() -> None:
    found = set(re.findall(r"`((?:[a-z]+/)+[a-z_]+\.py)`", PAGE))
    # The new-gate walk-through names the files of a gate that does not exist yet.
    real = {p for p in found if "datasets/" not in p and not p.startswith("rules/")}
    assert len(real) >= 20
    missing = [
        p
        for p in real
        if not (ROOT / p).is_file() and not (PACKAGE / p.removeprefix("operator/muster/")).is_file()
    ]
    assert sorted(missing) == []
