"""``muster run``'s observability flags fail with one clear line, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from muster.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--metrics-port=70000", "--metrics-port 70000 is not a port"),
        ("--metrics-max-namespaces=-1", "--metrics-max-namespaces must not be negative"),
    ],
)
def test_bad_metrics_flags_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("x")
    key.write_text("x")
    assert main(["run", f"--tls-cert-file={cert}", f"--tls-key-file={key}", flag]) == 2
    assert message in capsys.readouterr().err
