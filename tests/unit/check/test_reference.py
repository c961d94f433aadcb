"""docs/reference.md is what hack/generate-reference.py writes from the CRDs and the source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_reference_is_up_to_date_and_every_label_is_described() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "generate-reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_reference_covers_every_custom_resource() -> None:
    text = (ROOT / "docs" / "reference.md").read_text()
    for heading in ("## ImagePolicy", "## GPUStackPolicy", "## Model", "## ModelPolicy"):
        assert f"\n{heading}\n" in text
    assert "| `spec.authorities[].keyless.trustedRoot.name` |" in text
    assert "| `muster.dev/enforce` | label | Namespace |" in text
