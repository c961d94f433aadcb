"""``muster run --uncovered-images`` (the chart's ``images.uncovered``) reaches the image gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from muster.app import runtime
from muster.cli import main
from muster.images.rules import policies as imagepolicies

pytestmark = pytest.mark.unit


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[runtime.OperatorSettings]:
    found: list[runtime.OperatorSettings] = []

    async def record(settings: runtime.OperatorSettings) -> None:
        found.append(settings)

    monkeypatch.setattr(runtime, "run", record)
    return found


def run_args(tmp_path: Path) -> list[str]:
    cert = tmp_path / "tls.crt"
    cert.write_text("x")
    return ["run", f"--tls-cert-file={cert}", f"--tls-key-file={cert}"]


def test_deny_is_the_default_and_the_flag_or_environment_changes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: list[runtime.OperatorSettings]
) -> None:
    args = run_args(tmp_path)
    assert main(args) == 0
    assert main([*args, "--uncovered-images=warn"]) == 0
    monkeypatch.setenv("MUSTER_UNCOVERED_IMAGES", "allow")
    assert main(args) == 0
    assert [s.uncovered_images for s in seen] == [
        imagepolicies.Uncovered.DENY,
        imagepolicies.Uncovered.WARN,
        imagepolicies.Uncovered.ALLOW,
    ]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_unknown_value_is_a_usage_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seen: list[runtime.OperatorSettings],
    how: str,
) -> None:
    args = run_args(tmp_path)
    if how == "flag":
        args.append("--uncovered-images=permit")
    else:
        monkeypatch.setenv("MUSTER_UNCOVERED_IMAGES", "permit")
    assert main(args) == 2
    assert "--uncovered-images" in capsys.readouterr().err
    assert seen == []
