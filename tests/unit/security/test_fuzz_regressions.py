"""Inputs the atheris harnesses (``fuzz/``) found, kept as plain unit tests."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from muster.adapters import modelfiles
from muster.core import pickles

pytestmark = pytest.mark.unit

# PROTO 4, then a STACK_GLOBAL whose module and name come from memo slots picklescan cannot
# resolve: picklescan raised ValueError and the scanner crashed instead of judging the file.
UNRESOLVED_STACK_GLOBAL = base64.b64decode("gARylWN0lJSTaWN0lJSTkC4=")


@pytest.mark.parametrize("name", ["model.pkl", "weights.bin"])
def test_a_pickle_with_an_unresolvable_import_is_unsafe_not_a_crash(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / name).write_bytes(UNRESOLVED_STACK_GLOBAL)
    verdict = modelfiles.scan_file(tmp_path / name)
    assert verdict is not None
    assert verdict.kind is pickles.Kind.UNSAFE
    assert not verdict.passes
    assert "cannot be determined statically" in verdict.message
    report = modelfiles.scan(tmp_path)
    assert not report.passes
